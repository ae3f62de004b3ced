"""What every verb shares: exit codes, `CliError`, terminal-safe output, private files,
the dev authority's JSON document (apps, users, scopes), the argument parser's class, and the
parser of a verb that reads one token (`decode`, `validate`)."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import shlex
import sys
import tempfile
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_UNAVAILABLE = 4
EXIT_INTERRUPTED = 130

EXIT_CODES = """exit codes:
  0  done
  1  refused: by the authority (sign-in, token request), by the validator, or a failed check
  2  usage: bad arguments
  3  bad input or configuration: a file, a world file, a token that is not a JWT, options
  4  unavailable: the authority or its signing keys unreachable, or --timeout passed
  130  interrupted
"""

_MICROSOFT_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
        "login.windows.net",
    }
)
_ROPC_WARNING = "This API has been deprecated for public client flows"


class CliError(Exception):
    """A failure the command reports in one line and an exit code (never a traceback)."""

    def __init__(self, message: str, code: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.code = code


# -- small helpers ---------------------------------------------------------------------------


# C0, DEL, C1 (CSI, OSC, NEL... as single code points), Unicode line/paragraph separators and
# the bidi controls: what could move the cursor, retitle a window or forge a line.
_TERMINAL_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
_NAMED_CONTROLS = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_control(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED_CONTROLS:
        return _NAMED_CONTROLS[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _terminal_safe(text: str) -> str:
    """`text` with every control character shown as an escape (for human output)."""
    return _TERMINAL_UNSAFE.sub(_escape_control, text)


def _say(text: str = "", *, file: TextIO | None = None) -> None:
    """Print one line of human output, terminal-safe."""
    print(_terminal_safe(text), file=file if file is not None else sys.stdout)


def _write_private(path: Path, text: str) -> None:
    """Write `text` atomically, readable by the owner only: these files hold secrets."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "grpc-obo" / "authority"


def _read_token(value: str | None) -> str:
    """The token from the argument, or from stdin for `-` or none (keeps it out of `ps`)."""
    text = sys.stdin.read() if value in (None, "-") else value
    assert text is not None
    token = text.strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    if not token:
        raise CliError("no token given (pass it as an argument, or on stdin)")
    return token


def _load_dev_document(path: str) -> dict[str, Any]:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"{path}: cannot be read ({exc.strerror})") from None
    except ValueError:
        raise CliError(
            f"{path}: is not the JSON document `grpc-obo authority --write-env` writes"
        ) from None
    if not isinstance(document, dict) or not all(
        k in document for k in ("authority_host", "ca_file", "apps", "users")
    ):
        raise CliError(f"{path}: is not the JSON document `grpc-obo authority --write-env` writes")
    return document


def _dev_app(document: Mapping[str, Any], name: str | None, *, public: bool) -> dict[str, Any]:
    apps: Mapping[str, dict[str, Any]] = document["apps"]
    if name is None:
        candidates = [a for a in apps.values() if bool(a.get("public_client")) == public]
        if len(candidates) != 1:
            kind = "public client" if public else "app"
            names = ", ".join(n for n, a in apps.items() if a in candidates) or "none"
            raise CliError(f"name the {kind} to use with --client (candidates: {names})")
        return candidates[0]
    for app_name, app in apps.items():
        if name.lower() in (app_name.lower(), str(app.get("client_id", "")).lower()):
            return app
    raise CliError(f"no app {name!r} in the dev authority's document ({', '.join(apps)})")


def _dev_user(document: Mapping[str, Any], name: str) -> dict[str, Any]:
    users: Mapping[str, dict[str, Any]] = document["users"]
    key = name.lower()
    found = [
        u
        for short, u in users.items()
        if key in (short.lower(), str(u.get("username", "")).lower(), str(u.get("oid", "")))
    ]
    if len(found) != 1:
        raise CliError(f"no user {name!r} in the dev authority's document ({', '.join(users)})")
    return found[0]


def _expand_scope(document: Mapping[str, Any] | None, scope: str) -> str:
    """`orders/Orders.Read` -> `api://<orders' id>/Orders.Read` when `orders` is a dev app."""
    if document is None or "://" in scope or scope.count("/") != 1:
        return scope
    app_name, name = scope.split("/")
    app = document["apps"].get(app_name)
    if app is None or not app.get("app_id_uri"):
        return scope
    return f"{app['app_id_uri']}/{name}"


def _when(epoch: float, now: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    delta = epoch - now
    span = abs(delta)
    if span < 90:
        amount = f"{int(span)} s"
    elif span < 90 * 60:
        amount = f"{round(span / 60)} min"
    elif span < 48 * 3600:
        amount = f"{span / 3600:.1f} h"
    else:
        amount = f"{span / 86400:.1f} days"
    relative = f"in {amount}" if delta >= 0 else f"{amount} ago"
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC ({relative})"


def _print_steps(steps: Sequence[Any], stream: TextIO) -> None:
    for step in steps:
        mark = "ok  " if step.ok else "FAIL"
        _say(f"[{mark}] {step.name}: {step.detail}", file=stream)


# -- authority ---------------------------------------------------------------------------------


def _dotenv(env: Mapping[str, str], header: str) -> str:
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for name, value in env.items():
        # Quote only what needs it, POSIX-shell style (`set -a; . file` and compose read it).
        safe = re.fullmatch(r"[A-Za-z0-9_./:,@+=~%-]*", value) is not None
        lines.append(f"{name}={value if safe else shlex.quote(value)}")
    return "\n".join(lines) + "\n"


def _wrap(text: str) -> str:
    # RawDescriptionHelpFormatter keeps the exit-code table's lines; paragraphs are wrapped here.
    return textwrap.fill(text, width=88)


def _variable_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a shell variable name")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def add_token_verb(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    formatter: type[argparse.HelpFormatter],
    name: str,
    *,
    summary: str,
    description: str,
    json_help: str,
    options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.ArgumentParser:
    """A verb that reads one token (the argument, or stdin for `-` or none: keeps it out of
    `ps`) and can answer in JSON; `options` adds the verb's own between the two."""
    verb = commands.add_parser(
        name,
        help=summary,
        description=_wrap(description),
        epilog=EXIT_CODES,
        formatter_class=formatter,
    )
    verb.add_argument(
        "token", nargs="?", metavar="TOKEN", help="the token; '-' or none reads it from stdin"
    )
    if options is not None:
        options(verb)
    verb.add_argument("--json", action="store_true", help=json_help)
    return verb
