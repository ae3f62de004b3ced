"""The reference pages name everything the code has: each public name has an API entry, each
logger and each environment variable the library reads is documented. (The error table and the
CLI help are generated from the code at build time: docs/_ext/grpc_obo_docs.py.)"""

from __future__ import annotations

import re

import grpc_obo
from tests.docs.snippets import DOCS, REPO

SOURCE = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "src").rglob("*.py"))


def test_every_public_name_is_in_the_api_reference() -> None:
    api = (DOCS / "reference" / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\.\. auto\w+:: grpc_obo\.(\w+)", api, re.M))
    missing = set(grpc_obo.__all__) - documented - {"__version__", "TokenValidatorLike"}
    assert not missing, f"add to docs/reference/api.md: {sorted(missing)}"


def test_every_logger_is_in_the_logging_reference() -> None:
    page = (DOCS / "reference" / "logging.md").read_text(encoding="utf-8")
    loggers = set(re.findall(r'getLogger\("(grpc_obo[\w.]*)"\)', SOURCE))
    assert loggers, "no loggers found: the pattern is stale"
    missing = {name for name in loggers if f"`{name}`" not in page}
    assert not missing, f"add to docs/reference/logging.md: {sorted(missing)}"


def test_every_environment_variable_is_in_the_configuration_reference() -> None:
    page = (DOCS / "reference" / "configuration.md").read_text(encoding="utf-8")
    variables = set(re.findall(r'"((?:AZURE|GRPC_OBO)_[A-Z0-9_]*[A-Z0-9])"', SOURCE))
    assert "AZURE_TENANT_ID" in variables, "the pattern is stale"
    missing = {name for name in variables if f"`{name}" not in page}
    assert not missing, f"add to docs/reference/configuration.md: {sorted(missing)}"
