"""Sphinx configuration for the grpc_obo documentation (`make docs`).

Sphinx with the Furo theme and MyST Markdown pages; the API reference comes from the docstrings
(autodoc), the error table and the CLI reference from the code itself (docs/_ext). Warnings are
errors in `make docs` (-W --keep-going, nitpicky): a broken link or reference fails the build.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "_ext"))

import grpc_obo  # noqa: E402

project = "grpc_obo"
author = "grpc_obo contributors"
copyright = "grpc_obo contributors"
release = version = grpc_obo.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "grpc_obo_docs",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "**/.pytest_cache", "chain.py", "world.example.toml"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# Every cross reference must resolve: a renamed class or a typo fails the build.
nitpicky = True
nitpick_ignore_regex = [
    # Third-party and standard types that appear in signatures without an inventory here
    # (no network during the build: intersphinx has no inventories to fetch).
    (
        r"py:.*",
        r"(grpc|msal|redis|opentelemetry|aiohttp|requests|ssl|_contextvars|cryptography|httpx)\..*",
    ),
    (r"py:.*", r"(collections\.abc|typing|datetime|os|pathlib|asyncio|concurrent)\..*"),
    (r"py:.*", r"(grpc_obo\.|grpc_obo\.devauthority\.)_.*"),
    (r"py:.*", r"(enum|trace|metrics|_pytest|pytest)\..*"),
    (r"py:class", r"(IdentityMode|World|Path)"),
    (r"py:class", r"(T|_T|P|R|Self|Any|Callable|Awaitable|Mapping|Sequence|Iterable|Iterator)"),
    (r"py:class", r"(grpc_obo\.)?(TokenValidatorLike|_[A-Za-z]+)"),
    (r"py:class", r"(PathLike|StatusCode|ChannelCredentials|ServerInterceptor|aio\..*)"),
]
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_inherit_docstrings = False  # grpc's own docstrings (Google style) are not ours to show
python_maximum_signature_line_length = 88  # long signatures one parameter per line
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_preserve_defaults = True

html_theme = "furo"
html_title = f"grpc_obo {release}"
html_static_path = ["_static"]
html_css_files = ["site.css"]
html_show_sourcelink = False
html_theme_options = {
    "source_repository": "",
    "navigation_with_keys": True,
}
