# Two commands on a fresh clone: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit redis-server h2load bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,redis,otlp]'
	touch $(STAMP)

# The main job on embedded defaults: dev authority, in-process caches, all on loopback.
demo: $(STAMP)
	$(PY) -m examples.demo

# Tests need a redis-server binary (the suite starts one on a free port unless REDIS_URL is
# set); install Debian's package when it is missing so Redis tests never skip silently.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server not found: installing Debian's redis-server package"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

lint: $(STAMP)
	$(PY) -m ruff check src tests examples
	$(PY) -m ruff format --check src

typecheck: $(STAMP)
	$(PY) -m mypy

# pytest exits 5 when it collected nothing: that is a failure here, said out loud.
unit: $(STAMP) redis-server
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "FAIL: pytest collected no tests"; exit 1; fi; exit $$rc

test: lint typecheck unit

# The server benchmark's load generator (a C client, so the server is the bottleneck); without
# it the benchmark falls back to a Python client.
h2load:
	@command -v h2load >/dev/null 2>&1 || { \
	  echo "h2load not found: installing Debian's nghttp2-client package"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null; }

bench: $(STAMP) redis-server h2load
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
