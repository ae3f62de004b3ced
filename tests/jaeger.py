"""A real Jaeger 2 for tests: a private `jaeger` process on free loopback ports, memory storage.

Reusable outside this suite: `jaeger_server()` is a context manager yielding a `Jaeger` that knows
its OTLP endpoints and query API, and reads traces back with `fetch_trace()`. The binary comes
from `scripts/jaeger.sh` (JAEGER_BIN, else built once from source with Go into
~/.cache/grpc_obo); `python -m tests.jaeger` runs one in the foreground on the usual ports.

Every listener is on 127.0.0.1, including the query API, which Jaeger's built-in all-in-one
configuration binds to all interfaces (`:16686`, `:16685`) whatever JAEGER_LISTEN_HOST says. The
collector's own metrics (8888) are off and the health check gets a free port, so several
instances and other tests never clash.

The query API (`GET /api/v3/traces/{trace_id}`) answers `{"result": {"resourceSpans": [...]}}`:
OTLP/JSON with hex trace and span ids, `kind` and `status.code` as numbers, `intValue` as a
string, one resourceSpans entry per span, and no `parentSpanId` on a root. An unknown trace is a
404 with `{"error": {"httpCode": 404, "message": "No traces found"}}`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "JAEGER_SCRIPT",
    "Jaeger",
    "JaegerError",
    "JaegerUnavailable",
    "Ports",
    "Trace",
    "config_yaml",
    "jaeger_binary",
    "jaeger_server",
]

JAEGER_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "jaeger.sh"

_BUILD_TIMEOUT = 1800.0  # a cold build downloads ~500 modules and compiles for minutes
_START_TIMEOUT = 20.0
_STOP_TIMEOUT = 5.0
_HTTP_TIMEOUT = 2.0

# OTLP enum numbers as the query API writes them, named as opentelemetry.trace names them.
_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}

# Loopback requests must never go through an HTTP proxy taken from the environment.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class JaegerError(RuntimeError):
    """Jaeger could not be built, started or queried, or a trace did not arrive in time."""


class JaegerUnavailable(JaegerError):
    """No binary and none can be built, and GRPC_OBO_SKIP_JAEGER=1 asked for a skip."""


@dataclass(frozen=True)
class Ports:
    otlp_grpc: int = 4317
    otlp_http: int = 4318
    query_http: int = 16686
    query_grpc: int = 16685
    health: int = 13133


def config_yaml(ports: Ports, *, host: str = "127.0.0.1", max_traces: int = 10_000) -> str:
    """Jaeger 2 configuration: OTLP in, memory storage, query API, health check; nothing else."""
    return f"""\
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: none  # no Prometheus endpoint on 8888
    logs:
      level: info

extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: {max_traces}
  jaeger_query:
    storage:
      traces: memstore
    enable_tracing: false
    http:
      endpoint: "{host}:{ports.query_http}"
    grpc:
      endpoint: "{host}:{ports.query_grpc}"
  healthcheckv2:
    use_v2: true
    http:
      endpoint: "{host}:{ports.health}"

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: "{host}:{ports.otlp_grpc}"
      http:
        endpoint: "{host}:{ports.otlp_http}"

processors:
  batch:
    timeout: 100ms  # spans are readable a fraction of a second after export

exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


def jaeger_binary(*, timeout: float = _BUILD_TIMEOUT) -> str:
    """The path of a Jaeger 2 binary, built by `scripts/jaeger.sh` when missing.

    Raises JaegerUnavailable when Go is missing and GRPC_OBO_SKIP_JAEGER=1, JaegerError otherwise.
    """
    try:
        result = subprocess.run(
            ["bash", str(JAEGER_SCRIPT)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise JaegerError(f"{JAEGER_SCRIPT} did not finish within {timeout:.0f} s") from exc
    message = result.stderr.strip()
    if result.returncode != 0:
        raise JaegerError(f"{JAEGER_SCRIPT} failed (exit {result.returncode}):\n{message}")
    path = result.stdout.strip()
    if not path:
        raise JaegerUnavailable(message or f"{JAEGER_SCRIPT} printed no binary path")
    return path


@dataclass(frozen=True)
class Trace:
    """One trace as the query API returned it.

    `spans` are plain dicts: name, trace_id, span_id, parent_span_id (None on a root), kind
    ("SERVER", "CLIENT", "INTERNAL", ...), status ("UNSET", "OK", "ERROR"), status_message,
    attributes (dict, values decoded), events (list of {name, attributes, time_ns}),
    service_name, resource (dict), scope, start_ns, end_ns. `raw` is the response text, to
    search for strings (secrets) that must never reach a trace.
    """

    trace_id: str
    spans: list[dict[str, Any]]
    raw: str

    def named(self, name: str) -> list[dict[str, Any]]:
        return [span for span in self.spans if span["name"] == name]

    def one(self, name: str) -> dict[str, Any]:
        """The single span with this name; fails when there are none or several."""
        found = self.named(name)
        if len(found) != 1:
            raise AssertionError(
                f"expected one span named {name!r}, found {len(found)} in {self.names()}"
            )
        return found[0]

    def children(self, span: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [s for s in self.spans if s["parent_span_id"] == span["span_id"]]

    def roots(self) -> list[dict[str, Any]]:
        return [s for s in self.spans if s["parent_span_id"] is None]

    def names(self) -> list[str]:
        return sorted(span["name"] for span in self.spans)


class Jaeger:
    """A running Jaeger: endpoints and trace read-back. Built by `jaeger_server()`."""

    def __init__(self, *, host: str, ports: Ports, log_path: Path, pid: int) -> None:
        self.host = host
        self.ports = ports
        self.log_path = log_path
        self.pid = pid

    @property
    def otlp_grpc_endpoint(self) -> str:
        """For OTLPSpanExporter(endpoint=...) (gRPC) and OTEL_EXPORTER_OTLP_ENDPOINT."""
        return f"http://{self.host}:{self.ports.otlp_grpc}"

    @property
    def otlp_http_endpoint(self) -> str:
        """Base URL of OTLP/HTTP; the traces URL is this plus /v1/traces."""
        return f"http://{self.host}:{self.ports.otlp_http}"

    @property
    def otlp_http_traces_url(self) -> str:
        """For the OTLP/HTTP span exporter's endpoint=..., which takes the full URL."""
        return f"{self.otlp_http_endpoint}/v1/traces"

    @property
    def query_url(self) -> str:
        """Query API and (placeholder) UI: GET {query_url}/api/v3/traces/{trace_id}."""
        return f"http://{self.host}:{self.ports.query_http}"

    @property
    def health_url(self) -> str:
        return f"http://{self.host}:{self.ports.health}/status"

    def otel_env(self, service_name: str, *, protocol: str = "grpc") -> dict[str, str]:
        """Environment for a child process whose OTel SDK exports here (merge into os.environ)."""
        endpoint = self.otlp_grpc_endpoint if protocol == "grpc" else self.otlp_http_endpoint
        return {
            "OTEL_SERVICE_NAME": service_name,
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc" if protocol == "grpc" else "http/protobuf",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_TRACES_EXPORTER": "otlp",
        }

    def log(self) -> str:
        """Jaeger's own log so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")

    def fetch_trace(
        self, trace_id: str | int, *, expect_spans: int = 1, timeout: float = 10.0
    ) -> Trace:
        """Poll the query API until the trace has at least `expect_spans` spans.

        `trace_id` is 32 hex digits or the int from `span.get_span_context().trace_id`.
        Fails (JaegerError) after `timeout` seconds, saying what had arrived by then.
        """
        trace_hex = _trace_hex(trace_id)
        url = f"{self.query_url}/api/v3/traces/{trace_hex}"
        deadline = time.monotonic() + timeout
        last: Trace | None = None
        while True:
            body = _get(url)
            if body is not None:
                last = _parse_trace(trace_hex, body)
                if len(last.spans) >= expect_spans:
                    return last
            if time.monotonic() >= deadline:
                seen = "nothing" if last is None else f"{len(last.spans)} spans {last.names()}"
                raise JaegerError(
                    f"trace {trace_hex}: expected at least {expect_spans} spans within "
                    f"{timeout:.1f} s, Jaeger has {seen}"
                )
            time.sleep(0.05)


def _trace_hex(trace_id: str | int) -> str:
    if isinstance(trace_id, int):
        return format(trace_id, "032x")
    value = trace_id.lower()
    if len(value) != 32 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"a trace id is 32 hex digits, got {trace_id!r}")
    return value


def _get(url: str) -> str | None:
    """The body of a 200, None for a 404; anything else is an error."""
    try:
        with _HTTP.open(url, timeout=_HTTP_TIMEOUT) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        exc.close()
        if exc.code == 404:
            return None
        raise JaegerError(f"GET {url}: HTTP {exc.code}: {body[:500]}") from exc


def _value(value: Mapping[str, Any]) -> Any:
    """Decode one OTLP/JSON AnyValue."""
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        return [_value(v) for v in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return _attributes(value["kvlistValue"].get("values", []))
    if "bytesValue" in value:
        return value["bytesValue"]  # base64 text, as the API wrote it
    return None


def _attributes(pairs: list[Mapping[str, Any]]) -> dict[str, Any]:
    return {pair["key"]: _value(pair.get("value", {})) for pair in pairs}


def _parse_trace(trace_hex: str, body: str) -> Trace:
    document = json.loads(body)
    spans: list[dict[str, Any]] = []
    for resource_spans in document.get("result", {}).get("resourceSpans", []):
        resource = _attributes(resource_spans.get("resource", {}).get("attributes", []))
        for scope_spans in resource_spans.get("scopeSpans", []):
            scope = scope_spans.get("scope", {}).get("name", "")
            for raw in scope_spans.get("spans", []):
                status = raw.get("status", {})
                spans.append(
                    {
                        "name": raw["name"],
                        "trace_id": raw["traceId"],
                        "span_id": raw["spanId"],
                        "parent_span_id": raw.get("parentSpanId") or None,
                        "kind": _KINDS.get(int(raw.get("kind", 0)), str(raw.get("kind"))),
                        "status": _STATUS.get(int(status.get("code", 0)), str(status.get("code"))),
                        "status_message": status.get("message", ""),
                        "attributes": _attributes(raw.get("attributes", [])),
                        "events": [
                            {
                                "name": event.get("name", ""),
                                "attributes": _attributes(event.get("attributes", [])),
                                "time_ns": int(event.get("timeUnixNano", 0)),
                            }
                            for event in raw.get("events", [])
                        ],
                        "service_name": resource.get("service.name"),
                        "resource": resource,
                        "scope": scope,
                        "start_ns": int(raw.get("startTimeUnixNano", 0)),
                        "end_ns": int(raw.get("endTimeUnixNano", 0)),
                    }
                )
    spans.sort(key=lambda span: (span["start_ns"], span["name"]))
    return Trace(trace_id=trace_hex, spans=spans, raw=body)


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together so none is picked twice)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _wait_until_healthy(health_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise JaegerError(
                f"jaeger exited early with code {process.returncode}; its log:\n{_tail(log)}"
            )
        with contextlib.suppress(OSError, JaegerError):  # not listening yet, or still starting
            if _get(health_url) is not None:
                return
        time.sleep(0.05)
    raise JaegerError(f"jaeger was not healthy within {_START_TIMEOUT:.0f} s; log:\n{_tail(log)}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def jaeger_server(binary: str | None = None, *, ports: Ports | None = None) -> Iterator[Jaeger]:
    """Yield a running Jaeger on 127.0.0.1; stop it afterwards.

    Without `ports`, every listener gets a free port (retried when another process takes one
    first). `binary` defaults to `jaeger_binary()`.
    """
    path = binary or jaeger_binary()
    with tempfile.TemporaryDirectory(prefix="grpc-obo-jaeger-") as workdir:
        attempts = 1 if ports is not None else 3
        failures: list[str] = []
        for attempt in range(attempts):
            chosen = ports or Ports(*_free_ports(5))
            config = Path(workdir) / f"config-{attempt}.yaml"
            config.write_text(config_yaml(chosen))
            log_path = Path(workdir) / f"jaeger-{attempt}.log"
            with log_path.open("wb") as log_file:
                process = subprocess.Popen(
                    [path, "--config", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
            jaeger = Jaeger(host="127.0.0.1", ports=chosen, log_path=log_path, pid=process.pid)
            try:
                _wait_until_healthy(jaeger.health_url, process, log_path)
            except JaegerError as exc:
                _stop(process)
                failures.append(str(exc))
                continue
            try:
                yield jaeger
            finally:
                _stop(process)
            return
        raise JaegerError("could not start jaeger:\n" + "\n---\n".join(failures))


def main() -> int:
    """Run Jaeger in the foreground on 127.0.0.1 and the usual ports until Ctrl-C."""
    try:
        binary = jaeger_binary()
    except JaegerError as exc:
        print(exc, file=sys.stderr)
        return 1
    ports = Ports()
    with tempfile.TemporaryDirectory(prefix="grpc-obo-jaeger-") as workdir:
        config = Path(workdir) / "config.yaml"
        config.write_text(config_yaml(ports))
        print(
            f"Jaeger ({binary}) on 127.0.0.1, memory storage:\n"
            f"  UI and query API  http://127.0.0.1:{ports.query_http}"
            f"  (GET /api/v3/traces/<trace id>)\n"
            f"  OTLP gRPC         http://127.0.0.1:{ports.otlp_grpc}"
            f"  (OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:{ports.otlp_grpc})\n"
            f"  OTLP HTTP         http://127.0.0.1:{ports.otlp_http}\n"
            "Ctrl-C stops it.",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            return subprocess.call([binary, "--config", str(config)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
