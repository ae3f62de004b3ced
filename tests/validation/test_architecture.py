"""The validation room's boundaries: no grpc import, small documented modules."""

from __future__ import annotations

import ast
from pathlib import Path

import grpc_obo
from grpc_obo import _validation

PACKAGE = Path(_validation.__file__).parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_validation_never_imports_grpc_or_devauthority() -> None:
    for path in PACKAGE.glob("*.py"):
        for name in _imports(path):
            root = name.split(".")[0]
            assert root != "grpc", f"{path.name} imports {name}"
            assert not name.startswith(("grpc_obo.devauthority", "grpc_obo.testing")), path.name


def test_every_module_says_what_it_owns() -> None:
    for path in PACKAGE.glob("*.py"):
        docstring = ast.get_docstring(ast.parse(path.read_text()))
        assert docstring and len(docstring) > 40, path.name


def test_public_names() -> None:
    assert grpc_obo.TokenValidator is _validation.TokenValidator
    assert grpc_obo.ValidatorOptions is _validation.ValidatorOptions
    assert {"TokenValidator", "ValidatorOptions"} <= set(grpc_obo.__all__)
