"""The code blocks of the documentation site, and processes to run them as a reader would.

Every Python block on a page that is run (the quick start and the guides) is a file: a
`{code-block} python` with `:caption: NAME.py`. Blocks with the same caption on one page are
one file. `{literalinclude}` blocks show a file of the repository that another test runs.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
RUN_PAGES = ("quickstart.md", *sorted(f"guides/{p.name}" for p in (DOCS / "guides").glob("*.md")))
"""Pages whose every Python block is executed (the index page of the guides has none)."""

TIMEOUT = 30.0
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}")

_FENCE = re.compile(r"^```(\S*)(.*)$")


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    language: str
    caption: str | None
    code: str
    include: str | None = None


def blocks(page: str) -> list[Block]:
    """Every fenced block of a page, in order."""
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match or not match.group(1):
            i += 1
            continue
        start, kind, argument = i + 1, match.group(1), match.group(2).strip()
        i += 1
        options: dict[str, str] = {}
        if kind.startswith("{"):
            while i < len(lines) and lines[i].startswith(":"):
                name, _, value = lines[i][1:].partition(":")
                options[name.strip()] = value.strip()
                i += 1
        body: list[str] = []
        while i < len(lines) and lines[i] != "```":
            body.append(lines[i])
            i += 1
        i += 1
        code = "\n".join(body).strip("\n") + "\n"
        if kind == "{code-block}":
            found.append(Block(page, start, argument, options.get("caption"), code))
        elif kind == "{literalinclude}":
            found.append(
                Block(page, start, options.get("language", ""), None, "", include=argument)
            )
        else:
            found.append(Block(page, start, kind, None, code))
    return found


def files(page: str) -> dict[str, str]:
    """The page's Python files: caption -> the code of its blocks, joined."""
    out: dict[str, str] = {}
    for block in blocks(page):
        if block.language == "python" and block.caption:
            out[block.caption] = out.get(block.caption, "") + block.code
    return out


def write_files(page: str, directory: Path) -> dict[str, Path]:
    written = {}
    for name, code in files(page).items():
        path = directory / name
        path.write_text(code, encoding="utf-8")
        written[name] = path
    return written


def free_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without Azure or grpc_obo settings, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AZURE_", "GRPC_OBO_", "MSAL_", "OTEL_")) and k != "PYTHONWARNINGS"
    }
    env.update(extra)
    return env


@dataclass
class Service:
    """A snippet run as a long-lived process; ready when it prints `serving on`."""

    name: str
    process: subprocess.Popen[str]
    first_line: str = ""
    output: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, script: Path, env: dict[str, str], cwd: Path) -> Service:
        process = subprocess.Popen(
            [sys.executable, str(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
        )
        service = cls(script.name, process)
        assert process.stdout is not None
        line = process.stdout.readline()  # empty if it died: stderr says why
        if "serving on" not in line:
            process.kill()
            out, err = process.communicate()
            raise AssertionError(f"{script.name} did not start: {line}{out}\n{err}")
        service.first_line = line
        return service

    def stop(self) -> str:
        """SIGTERM, then everything it printed; it must not have crashed."""
        self.process.send_signal(signal.SIGTERM)
        try:
            out, err = self.process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
        text = self.first_line + out + err
        assert "Traceback" not in err or "KeyboardInterrupt" in err, f"{self.name}:\n{err}"
        assert self.process.returncode in (0, -signal.SIGTERM), f"{self.name}:\n{err}"
        return text


def run(
    script: Path, *args: str, env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=TIMEOUT * 2,
        check=False,
    )
