# Two commands on a fresh clone: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit redis-server chromium h2load bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,redis,otlp]'
	touch $(STAMP)

# The main job on embedded defaults: dev authority, in-process caches, all on loopback.
demo: $(STAMP)
	$(PY) -m examples.demo
	$(PY) -m examples.mixed

# The Python code for protos/ (committed: nothing generates at test or demo time).
# tests/examples/test_protos.py fails when it is stale; `make protos-check` says the same.
.PHONY: protos protos-check
protos: $(STAMP)
	$(PY) scripts/gen_protos.py

protos-check: $(STAMP)
	$(PY) scripts/gen_protos.py --check

# Tests need a redis-server binary (the suite starts one on a free port unless REDIS_URL is
# set); install Debian's package when it is missing so Redis tests never skip silently.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server not found: installing Debian's redis-server package"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

# The sign-in page tests drive a real headless Chromium (Debian's package).
chromium:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || { \
	  echo "chromium not found: installing Debian's chromium and chromium-driver packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

# The telemetry tests need a Jaeger 2 binary and no package ships one: scripts/jaeger.sh builds it
# once from source with Go into ~/.cache/grpc_obo (minutes; JAEGER_BIN=/path/to/jaeger uses yours).
# Without Go this fails, unless GRPC_OBO_SKIP_JAEGER=1: then the Jaeger tests are skipped, loudly.
.PHONY: jaeger jaeger-run
jaeger:
	@path=$$(bash scripts/jaeger.sh) && echo "jaeger: $${path:-none, the Jaeger tests will be SKIPPED}"

# Jaeger in the foreground on 127.0.0.1, memory storage: UI and query API http://127.0.0.1:16686,
# OTLP gRPC :4317, OTLP HTTP :4318. Ctrl-C stops it.
jaeger-run: $(STAMP) jaeger
	$(PY) -m tests.jaeger

lint: $(STAMP)
	$(PY) -m ruff check src tests examples
	$(PY) -m ruff format --check src tests examples

typecheck: $(STAMP)
	$(PY) -m mypy

# Branch coverage of src/grpc_obo ([tool.coverage] in pyproject.toml), with a floor: the level
# measured when it was introduced, rounded down; raise it when tests add coverage, never lower
# it. `coverage run`, not pytest-cov's --cov: the package's pytest plugin (grpc_obo.testing) is
# imported before --cov would start, so every module-level line would count as missed. Code run
# in subprocesses (the CLI's, the replicas', the docs' scripts) is not counted: the floor is
# what the in-process tests reach. `make unit COV_FLOOR=0` for a subset of the tests.
COV_FLOOR ?= 88

# pytest exits 5 when it collected nothing: that is a failure here, said out loud.
unit: $(STAMP) redis-server chromium jaeger
	@$(PY) -m coverage run -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "FAIL: pytest collected no tests"; exit 1; fi; \
	[ $$rc -eq 0 ] || exit $$rc; \
	$(PY) -m coverage report --fail-under=$(COV_FLOOR)

test: lint typecheck unit

# The suite (pytest only) on every supported Python found here: ~/.pyenv/versions/X.Y.* first,
# then pythonX.Y on PATH (a pyenv shim counts only if it really runs X.Y). Each gets its own
# venv under .venvs/X.Y, rebuilt when pyproject.toml or the interpreter changes. Says which
# were found and which skipped; fails if any run fails or if none was found.
SUPPORTED_PYTHONS ?= 3.11 3.12 3.13
.PHONY: test-pythons
test-pythons: redis-server chromium jaeger
	@found=; skipped=; passed=; failed=; \
	for v in $(SUPPORTED_PYTHONS); do \
	  py=; \
	  for c in $$(ls -d "$${PYENV_ROOT:-$$HOME/.pyenv}"/versions/$$v.* 2>/dev/null | sort -rV | sed "s|\$$|/bin/python$$v|") \
	           $$(command -v python$$v 2>/dev/null); do \
	    [ -x "$$c" ] || continue; \
	    [ "$$("$$c" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$$v" ] || continue; \
	    "$$c" -c 'import ensurepip, venv' 2>/dev/null || { echo "test-pythons: $$c has no venv/ensurepip, not used"; continue; }; \
	    py=$$c; break; \
	  done; \
	  if [ -z "$$py" ]; then skipped="$$skipped $$v"; echo "test-pythons: Python $$v SKIPPED: no interpreter found"; continue; fi; \
	  found="$$found $$v"; venv=.venvs/$$v; stamp=$$venv/.installed; \
	  echo "==== test-pythons: Python $$v: $$py ===="; \
	  if [ ! -f $$stamp ] || [ pyproject.toml -nt $$stamp ] || [ "$$(cat $$stamp)" != "$$py" ]; then \
	    rm -rf $$venv && "$$py" -m venv $$venv && $$venv/bin/python -m pip install --quiet --upgrade pip \
	      && $$venv/bin/python -m pip install --quiet -e '.[dev,redis,otlp]' && echo "$$py" > $$stamp \
	      || { failed="$$failed $$v(install)"; continue; }; \
	  fi; \
	  $$venv/bin/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 0 ]; then passed="$$passed $$v"; \
	  elif [ $$rc -eq 5 ]; then failed="$$failed $$v(collected-nothing)"; \
	  else failed="$$failed $$v"; fi; \
	done; \
	echo "==== test-pythons: found:$${found:- none}; skipped:$${skipped:- none}; passed:$${passed:- none}; failed:$${failed:- none} ===="; \
	[ -n "$$found" ] || { echo "FAIL: no supported Python ($(SUPPORTED_PYTHONS)) found"; exit 1; }; \
	[ -z "$$failed" ]

# The server benchmark's load generator (a C client, so the server is the bottleneck); without
# it the benchmark falls back to a Python client.
h2load:
	@command -v h2load >/dev/null 2>&1 || { \
	  echo "h2load not found: installing Debian's nghttp2-client package"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null; }

# The documentation site (Sphinx + Furo + MyST, docs/; CONTRIBUTING.md says why): a fresh
# environment every build, nitpicky, warnings are errors, so a broken link, a missing reference
# or a docstring that does not parse fails. Installs the `docs` extra into .venv itself.
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[docs]'
	touch $(DOCS_STAMP)

.PHONY: docs docs-screenshots
docs: $(DOCS_STAMP)
	$(PY) -m sphinx -b html -E -W --keep-going -n -q docs docs/_build/html
	@echo "docs: file://$(CURDIR)/docs/_build/html/index.html"

# PNGs of the landing page, one guide and the API reference, taken with headless Chromium.
docs-screenshots: docs chromium
	$(PY) scripts/docs_screenshots.py docs/_build/html docs/_build/screenshots

bench: $(STAMP) redis-server
	@$(PY) -c 'import matplotlib, azure.identity' 2>/dev/null || $(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/run.py
	$(PY) -m tests.soak --report --json benchmarks/results/soak.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache docs/_build
