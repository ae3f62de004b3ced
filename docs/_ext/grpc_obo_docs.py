"""Sphinx directives that render reference tables from grpc_obo's code, so they cannot drift.

    ```{grpc-obo-errors}
    ```            the exception tree: each class with its gRPC status (`status_for`), the
                   `www-authenticate` challenge a client gets (`www_authenticate_for`), its
                   default `reason` and its one-line docstring; class names link to the API page

    ```{grpc-obo-cli}
    ```            `grpc-obo --help` and each verb's help, as argparse prints them

Both call the functions the library itself uses: a new error class, a changed status or a new
CLI option shows up here at the next build; a class the API page does not document fails it.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
from collections.abc import Iterator
from typing import Any

import grpc
from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

import grpc_obo

# Values for the keyword arguments a class takes, so that each challenge shows its full form
# (a claims challenge only has `claims=` when the authority sent one).
_SAMPLES: dict[str, Any] = {
    "required_scopes": ("Data.Read",),
    "claims": '{"access_token":{"acrs":{"essential":true,"value":"c1"}}}',
    "auth_context": "c1",
    "code": grpc.StatusCode.PERMISSION_DENIED,
    "challenge": 'Bearer error="insufficient_scope", scope="Data.Read"',
}
_MESSAGE = "MESSAGE"
# The downstream's own status and challenge travel through these unchanged.
_RELAYED = {"code", "challenge"}


def _instance(cls: type[BaseException]) -> tuple[BaseException, set[str]]:
    """An instance built from the constructor's own signature; which arguments were relayed."""
    signature = inspect.signature(cls.__init__)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    relayed: set[str] = set()
    for name, parameter in list(signature.parameters.items())[1:]:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if name == "message":
            value: Any = _MESSAGE
        elif name in _SAMPLES:
            value = _SAMPLES[name]
        elif parameter.default is not parameter.empty:
            continue
        else:
            raise RuntimeError(
                f"grpc-obo-errors: {cls.__name__}({name}=...) needs a sample value in "
                "docs/_ext/grpc_obo_docs.py"
            )
        if name in _RELAYED:
            relayed.add(name)
        if parameter.kind is parameter.POSITIONAL_OR_KEYWORD and not kwargs:
            args.append(value)
        else:
            kwargs[name] = value
    return cls(*args, **kwargs), relayed


def _tree(root: type[BaseException]) -> Iterator[tuple[int, type[BaseException]]]:
    """The public classes under `root`, depth first, in the order they are defined."""
    public = {
        value
        for value in vars(grpc_obo).values()
        if isinstance(value, type) and issubclass(value, root)
    }

    def walk(cls: type[BaseException], depth: int) -> Iterator[tuple[int, type[BaseException]]]:
        yield depth, cls
        for child in cls.__subclasses__():
            if child in public:
                yield from walk(child, depth + 1)

    yield from walk(root, 0)


def _xref(env_docname: str, name: str) -> nodes.Node:
    ref = addnodes.pending_xref(
        "", refdomain="py", reftype="exc", reftarget=f"grpc_obo.{name}", refexplicit=True
    )
    ref["refdoc"] = env_docname
    ref += nodes.literal(name, name)
    return ref


def _table(headers: list[str], rows: list[list[nodes.Node]], widths: list[int]) -> nodes.table:
    table = nodes.table(classes=["grpc-obo-table"])
    group = nodes.tgroup(cols=len(headers))
    table += group
    for width in widths:
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    group += head
    row = nodes.row()
    for header in headers:
        row += nodes.entry("", nodes.paragraph(text=header))
    head += row
    body = nodes.tbody()
    group += body
    for cells in rows:
        row = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            if isinstance(cell, nodes.paragraph | nodes.container):
                entry += cell
            else:
                entry += nodes.paragraph("", "", cell)
            row += entry
        body += row
    return table


def _inline_markdown(text: str) -> list[nodes.Node]:
    """`code` spans of a one-line docstring as literals, the rest as text."""
    out: list[nodes.Node] = []
    for n, part in enumerate(text.split("`")):
        if part:
            out.append(nodes.literal(part, part) if n % 2 else nodes.Text(part))
    return out


def _code(text: str) -> nodes.Node:
    return nodes.literal(text, text) if text else nodes.Text("-")


class ErrorTable(SphinxDirective):
    """The exception tree with status, challenge, reason and description per class."""

    def run(self) -> list[nodes.Node]:
        rows: list[list[nodes.Node]] = []
        for depth, cls in _tree(grpc_obo.GrpcOboError):
            error, relayed = _instance(cls)
            status = grpc_obo.status_for(error)
            challenge = grpc_obo.www_authenticate_for(error)
            name = nodes.paragraph()
            if depth:
                name += nodes.Text("\u2003" * (depth - 1) + "└─ ")
            name += _xref(self.env.docname, cls.__name__)
            if "code" in relayed:
                status_cell: nodes.Node = nodes.Text("the downstream's status")
            else:
                status_cell = _code(status.name)
            if "challenge" in relayed:
                challenge_cell: nodes.Node = nodes.Text("the downstream's challenge, relayed")
            else:
                shown = (challenge or "").replace(_MESSAGE, "…")
                challenge_cell = _code(shown) if shown else nodes.Text("no challenge")
            reason = getattr(error, "reason", None)
            doc = (inspect.getdoc(cls) or "").split("\n", 1)[0]
            meaning = _inline_markdown(doc)
            if reason:
                meaning += [nodes.Text(" Reason: "), nodes.literal(reason, reason), nodes.Text(".")]
            answer = nodes.container()
            answer += nodes.paragraph("", "", status_cell, classes=["grpc-obo-status"])
            answer += nodes.paragraph("", "", challenge_cell, classes=["grpc-obo-challenge"])
            rows.append([name, answer, nodes.paragraph("", "", *meaning)])
        return [
            _table(
                ["class", "gRPC status and www-authenticate challenge", "what it means"],
                rows,
                [30, 40, 30],
            )
        ]


@contextlib.contextmanager
def _columns(width: int) -> Iterator[None]:
    # argparse wraps help text to the terminal width: pin it so the page is the same everywhere.
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


class CliHelp(SphinxDirective):
    """`grpc-obo --help`, then each verb's `--help`, as argparse prints them."""

    def run(self) -> list[nodes.Node]:
        from grpc_obo import _cli

        with _columns(88):
            parser = _cli._parser()
            out: list[nodes.Node] = [
                nodes.literal_block(text=parser.format_help().rstrip(), language="text")
            ]
            for action in parser._subparsers._group_actions if parser._subparsers else ():
                for verb, sub in getattr(action, "choices", {}).items():
                    out.append(nodes.rubric(text=f"grpc-obo {verb}"))
                    text = re.sub(r"[ \t]+\n", "\n", sub.format_help()).rstrip()
                    out.append(nodes.literal_block(text=text, language="text"))
        return out


# -- docstrings ---------------------------------------------------------------------------------
# grpc_obo's docstrings are written in Markdown's inline style (`code`, ``` fences, indented
# examples), which reads well in an editor and in help(). autodoc parses reStructuredText, so
# they are translated here: single backticks become literals, fences and indented examples
# become literal blocks. Nothing else changes.

_INLINE = re.compile(r"(?<![`:])`([^`\n]+)`(?!`)")


def _rst_inline(line: str) -> str:
    return _INLINE.sub(lambda m: "``" + m.group(1) + "``", line)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def markdown_docstring(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            base = _indent(line)
            out += [" " * base + "::", ""]
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                out.append(" " * (base + 4) + lines[i][base:] if lines[i].strip() else "")
                i += 1
            out.append("")
            i += 1
            continue
        previous = next((x for x in reversed(out) if True), "")
        is_list = stripped.startswith(("- ", "* ")) or re.match(r"\d+\. ", stripped)
        prev_is_text = bool(previous.strip())
        prev_is_list_item = bool(re.match(r"\s*([-*] |\d+\. )", previous)) or (
            out and any(re.match(r"\s*([-*] |\d+\. )", x) for x in out[-6:])
        )
        if (
            stripped
            and prev_is_text
            and not is_list
            and not prev_is_list_item
            and _indent(line) > _indent(previous)
        ):
            # An indented example under a sentence: a literal block.
            base = _indent(previous)
            out[-1] = previous.rstrip() + ("" if previous.rstrip().endswith("::") else " ::")
            out.append("")
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
                out.append(lines[i])
                i += 1
            out.append("")
            continue
        out.append(_rst_inline(line))
        i += 1
    return out


def _process_signature(
    app: Sphinx,
    what: str,
    name: str,
    obj: Any,
    options: Any,
    signature: str | None,
    ret: str | None,
) -> tuple[str | None, str | None] | None:
    # A dataclass default like `clock=time.time` prints as `<built-in function time>`, and a
    # default_factory as `<factory>`: the signature parser cannot read either (the whole
    # signature would then show as raw text).
    if signature and "<" in signature:
        signature = signature.replace("<factory>", "...")
        signature = re.sub(
            r"<(?:built-in )?function ([\w.]+)(?: at 0x[0-9a-f]+)?>", r"\1", signature
        )
    return signature, ret


def _process_docstring(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    lines[:] = markdown_docstring(lines)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("grpc-obo-errors", ErrorTable)
    app.add_directive("grpc-obo-cli", CliHelp)
    app.connect("autodoc-process-docstring", _process_docstring)
    app.connect("autodoc-process-signature", _process_signature)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
