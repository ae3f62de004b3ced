"""Environment variables that steer outbound HTTPS, for the tests that prove they do not.

Build machines set several of these for their own tools (this one sets REQUESTS_CA_BUNDLE,
CURL_CA_BUNDLE, SSL_CERT_FILE and SSL_CERT_DIR): tests clear them all, then set what they test.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")
PROXY_VARIABLES = (
    *(f"{name}_PROXY" for name in ("HTTPS", "HTTP", "ALL", "NO")),
    *(f"{name}_proxy" for name in ("https", "http", "all", "no")),
)
DEAD_PROXY = "http://127.0.0.1:9"
"""The discard port: nothing listens there, so a request routed through it fails."""


def clear_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*CA_VARIABLES, *PROXY_VARIABLES):
        monkeypatch.delenv(name, raising=False)


def hashed_ca_dir(tmp_path: Path, ca_file: Path) -> str:
    """A directory OpenSSL can search (SSL_CERT_DIR form) holding only `ca_file`."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to hash a certificate directory with")
    directory = tmp_path / "certs"
    directory.mkdir()
    (directory / "ca.pem").write_bytes(ca_file.read_bytes())
    subprocess.run(["openssl", "rehash", str(directory)], check=True, capture_output=True)
    return str(directory)
