"""`DevAuthority.issue_server_certificate`: TLS certificates for your own servers, signed by the
authority's CA. grpc accepts one for the hosts it names and refuses it for any other; a client
that does not trust the CA, or speaks plaintext, gets nowhere. The files are private, written
whole, and no key reaches a log, a repr or `grpc-obo authority`'s output.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import os
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from grpc_obo.devauthority import DevAuthority, ServerCertificate

TIMEOUT = 10.0
ROOT = Path(__file__).resolve().parents[2]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _key_body(path: Path) -> list[str]:
    """The base64 lines of a PEM key: what must never appear in any output."""
    return [line for line in path.read_text().splitlines() if line and "-----" not in line]


class Served:
    """A grpc.aio server with the health service on 127.0.0.1 over TLS."""

    def __init__(self, server: grpc.aio.Server, port: int) -> None:
        self.server = server
        self.port = port


async def _serve(issued: ServerCertificate, host: str = "127.0.0.1") -> Served:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    credentials = grpc.ssl_server_credentials(
        [(issued.key_file.read_bytes(), issued.cert_file.read_bytes())]
    )
    port = server.add_secure_port(f"{host}:0", credentials)
    await server.start()
    return Served(server, port)


@pytest.fixture
async def served(authority: DevAuthority, tmp_path: Path) -> AsyncIterator[Served]:
    running = await _serve(authority.issue_server_certificate(tmp_path / "tls"))
    try:
        yield running
    finally:
        await running.server.stop(0)


async def _check(
    target: str, credentials: grpc.ChannelCredentials | None, *, override: str | None = None
) -> grpc.StatusCode:
    options = [("grpc.ssl_target_name_override", override)] if override else []
    channel = (
        grpc.aio.secure_channel(target, credentials, options=options)
        if credentials is not None
        else grpc.aio.insecure_channel(target)
    )
    async with channel:
        try:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=TIMEOUT
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    return grpc.StatusCode.OK


def _trusting(authority: DevAuthority) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(authority.ca_file.read_bytes())


async def test_grpc_accepts_it_for_127_0_0_1_and_localhost(
    authority: DevAuthority, served: Served
) -> None:
    trusting = _trusting(authority)
    assert await _check(f"127.0.0.1:{served.port}", trusting) == grpc.StatusCode.OK
    assert await _check(f"localhost:{served.port}", trusting) == grpc.StatusCode.OK


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_grpc_accepts_it_for_ipv6_loopback(authority: DevAuthority, tmp_path: Path) -> None:
    running = await _serve(authority.issue_server_certificate(tmp_path), host="[::1]")
    try:
        assert await _check(f"[::1]:{running.port}", _trusting(authority)) == grpc.StatusCode.OK
    finally:
        await running.server.stop(0)


async def test_grpc_refuses_it_for_a_host_it_does_not_name(
    authority: DevAuthority, served: Served, tmp_path: Path
) -> None:
    trusting = _trusting(authority)
    # The default certificate, checked against a name not among its SANs.
    refused = await _check(f"127.0.0.1:{served.port}", trusting, override="api.example")
    assert refused == grpc.StatusCode.UNAVAILABLE
    # A certificate for api.example only, served on 127.0.0.1: refused for 127.0.0.1 ...
    elsewhere = await _serve(authority.issue_server_certificate(tmp_path, hosts=["api.example"]))
    try:
        target = f"127.0.0.1:{elsewhere.port}"
        assert await _check(target, trusting) == grpc.StatusCode.UNAVAILABLE
        assert await _check(target, trusting, override="other.example") == (
            grpc.StatusCode.UNAVAILABLE
        )
        # ... and accepted for the name it does carry: the name is what was refused.
        assert await _check(target, trusting, override="api.example") == grpc.StatusCode.OK
    finally:
        await elsewhere.server.stop(0)


async def test_a_client_that_does_not_trust_the_ca_or_speaks_plaintext_is_refused(
    served: Served, tmp_path: Path
) -> None:
    target = f"127.0.0.1:{served.port}"
    assert await _check(target, None) == grpc.StatusCode.UNAVAILABLE  # plaintext
    async with DevAuthority() as other:  # another authority, another CA
        strangers = grpc.ssl_channel_credentials(other.ca_file.read_bytes())
        assert await _check(target, strangers) == grpc.StatusCode.UNAVAILABLE


def test_the_certificate_is_a_short_lived_server_certificate_from_the_ca(
    authority: DevAuthority, tmp_path: Path
) -> None:
    directory = tmp_path / "new" / "tls"  # created, owner only
    issued = authority.issue_server_certificate(
        directory, hosts=("127.0.0.1", "::1", "LocalHost", "api.example", "127.0.0.1")
    )
    assert issued.cert_file == directory / "server.pem"
    assert issued.key_file == directory / "server-key.pem"
    assert issued.ca_file == authority.ca_file
    assert issued.hosts == ("127.0.0.1", "::1", "LocalHost", "api.example")
    assert _mode(directory) == 0o700
    assert _mode(issued.key_file) == 0o600
    assert sorted(p.name for p in directory.iterdir()) == ["server-key.pem", "server.pem"]

    cert = x509.load_pem_x509_certificate(issued.cert_file.read_bytes())
    ca = x509.load_pem_x509_certificate(authority.ca_file.read_bytes())
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "api.example"]
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == (
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    )
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(hours=23) < lifetime <= datetime.timedelta(hours=24)
    assert issued.not_valid_after == cert.not_valid_after_utc

    key = serialization.load_pem_private_key(issued.key_file.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key() == cert.public_key()

    # Never past the CA, whatever is asked for.
    long = authority.issue_server_certificate(
        tmp_path, name="long", valid_for=datetime.timedelta(days=3650)
    )
    long_cert = x509.load_pem_x509_certificate(long.cert_file.read_bytes())
    assert long_cert.not_valid_after_utc <= ca.not_valid_after_utc


def test_issuing_again_replaces_both_files_whole(authority: DevAuthority, tmp_path: Path) -> None:
    first = authority.issue_server_certificate(tmp_path, name="store")
    before = first.key_file.read_bytes(), first.cert_file.read_bytes()
    second = authority.issue_server_certificate(tmp_path, name="store")
    assert second.key_file == first.key_file
    after = second.key_file.read_bytes(), second.cert_file.read_bytes()
    assert after[0] != before[0] and after[1] != before[1]
    key = serialization.load_pem_private_key(after[0], password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key() == x509.load_pem_x509_certificate(after[1]).public_key()
    # Atomic writes leave no temporary file behind; each name has its own pair.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store-key.pem", "store.pem"]
    assert _mode(second.key_file) == 0o600


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({"hosts": ()}, "at least one host"),
        ({"hosts": ["127.0.0.1", " "]}, "no empty one"),
        ({"hosts": ["not a host!"]}, "not an IP address or a DNS name: 'not a host!'"),
        ({"hosts": ["under_score.example"]}, "not an IP address or a DNS name"),
        ({"name": "../escape"}, "name '../escape'"),
        ({"name": ""}, "name ''"),
        ({"name": "ca"}, "not 'ca' or 'ca-key'"),
        ({"name": "CA-KEY"}, "not 'ca' or 'ca-key'"),
        ({"valid_for": datetime.timedelta(0)}, "valid_for must be positive"),
    ],
)
def test_bad_arguments_are_value_errors_and_write_nothing(
    authority: DevAuthority, tmp_path: Path, arguments: dict[str, object], says: str
) -> None:
    with pytest.raises(ValueError) as raised:
        authority.issue_server_certificate(tmp_path / "out", **arguments)  # type: ignore[arg-type]
    assert says in str(raised.value)
    assert not (tmp_path / "out").exists()


def test_a_single_host_string_is_one_host(authority: DevAuthority, tmp_path: Path) -> None:
    issued = authority.issue_server_certificate(tmp_path, hosts="api.example")
    assert issued.hosts == ("api.example",)


async def test_a_stopped_authority_issues_nothing(tmp_path: Path) -> None:
    authority = DevAuthority()
    with pytest.raises(RuntimeError, match="not running"):
        authority.issue_server_certificate(tmp_path)
    async with authority:
        authority.issue_server_certificate(tmp_path)
    with pytest.raises(RuntimeError, match="not running"):
        authority.issue_server_certificate(tmp_path, name="after")


def test_no_key_in_logs_or_repr(
    authority: DevAuthority, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        issued = authority.issue_server_certificate(tmp_path)
    shown = caplog.text + repr(issued) + str(issued)
    assert "PRIVATE KEY" not in shown
    assert not any(line in shown for line in _key_body(issued.key_file))


def test_grpc_obo_authority_server_cert_writes_one_and_prints_only_paths(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "GRPC_OBO_"))}
    state, certs = tmp_path / "state", tmp_path / "certs"
    args = [
        sys.executable,
        "-m",
        "grpc_obo._cli",
        "authority",
        "--state-dir",
        str(state),
        "--server-cert",
        str(certs),
        "--write-env",
        str(tmp_path / "dev.json"),
        "--serve-seconds",
        "0",
    ]
    done = subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)["server_certificate"]
    assert shown == json.loads((tmp_path / "dev.json").read_text())["server_certificate"]
    assert shown["cert_file"] == str(certs / "server.pem")
    assert shown["key_file"] == str(certs / "server-key.pem")
    assert shown["ca_file"] == str(state / "ca.pem")
    assert shown["hosts"] == ["127.0.0.1", "localhost", "::1"]
    assert _mode(certs / "server-key.pem") == 0o600
    # The certificate outlives the run, signed by the CA the state dir keeps.
    cert = x509.load_pem_x509_certificate((certs / "server.pem").read_bytes())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate((state / "ca.pem").read_bytes()))
    output = done.stdout + done.stderr
    assert "PRIVATE KEY" not in output
    assert not any(line in output for line in _key_body(certs / "server-key.pem"))
    # Nothing of it lands in the state dir (client certificates of the run are gone too).
    assert sorted(p.name for p in state.glob("*.pem")) == ["ca-key.pem", "ca.pem"]


def test_grpc_obo_authority_server_cert_in_an_unwritable_place_is_exit_3(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "GRPC_OBO_"))}
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_obo._cli",
            "authority",
            "--state-dir",
            str(tmp_path / "state"),
            "--server-cert",
            str(blocker / "certs"),
            "--serve-seconds",
            "0",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert f"--server-cert {blocker / 'certs'}" in done.stderr
    assert "Traceback" not in done.stderr
