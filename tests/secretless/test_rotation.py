"""Credentials rotate without a restart, mid-traffic, with zero failed calls: a certificate
file (PEM or PFX) replaced on disk while both certificates are registered (the rollover), and a
federated token file rotated by the issuer. Each rollover ends with the old credential no longer
accepted, so the calls after it prove the new one is in use."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from grpc_obo import ClientCredential, use_identity
from grpc_obo._exchange._exchanger import Exchanger
from grpc_obo.devauthority import App, ClientCertificate, DevAuthority
from tests.exchangers import on_behalf_of

from .conftest import confidential_client, downstream_scope, user_identity

STEP = 12
"""Exchanges that must complete between two steps of a rollover."""


class Traffic:
    """Workers exchanging tokens for new user tokens (so every call reaches the authority)."""

    def __init__(self, exchanger: Exchanger, identity: Callable[[], Any], scope: str) -> None:
        self.exchanger = exchanger
        self.identity = identity
        self.scope = scope
        self.started = 0
        self.done: set[int] = set()
        self.failures: list[BaseException] = []
        self._changed = asyncio.Condition()
        self._stop = False
        self._tasks: list[asyncio.Task[None]] = []

    async def _worker(self) -> None:
        while not self._stop:
            number, self.started = self.started, self.started + 1
            try:
                with use_identity(self.identity()):
                    await self.exchanger.acquire([self.scope])
            except Exception as exc:  # counted: the test expects none
                self.failures.append(exc)
            async with self._changed:
                self.done.add(number)
                self._changed.notify_all()

    def start(self, workers: int = 6) -> None:
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(workers)]

    def mark(self) -> int:
        """Calls started from now on begin after whatever the test just did."""
        return self.started

    async def completed_after(self, mark: int, count: int = STEP) -> None:
        """Until every call started before `mark` has ended and `count` calls started at or
        after it have completed."""

        def ready() -> bool:
            before = all(n in self.done for n in range(mark))
            return before and sum(1 for n in self.done if n >= mark) >= count

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(ready), timeout=60)

    async def stop(self) -> None:
        self._stop = True
        await asyncio.gather(*self._tasks)


def _replace(path: Path, data: bytes) -> None:
    """As Key Vault sync and cert-manager do: a new file renamed over the old one."""
    temporary = path.with_suffix(".new")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _pem(cert: ClientCertificate) -> bytes:
    assert cert.private_key_pem is not None
    return cert.private_key_pem + cert.certificate_pem


def _pfx(cert: ClientCertificate, password: bytes) -> bytes:
    assert cert.private_key_pem is not None
    key = serialization.load_pem_private_key(cert.private_key_pem, password=None)
    return pkcs12.serialize_key_and_certificates(
        b"middle-tier",
        key,  # type: ignore[arg-type]
        cert.certificate,
        None,
        serialization.BestAvailableEncryption(password),
    )


@pytest.mark.parametrize("form", ["pem", "pfx"])
async def test_a_certificate_file_rotated_mid_traffic_fails_no_call(
    authority: DevAuthority, middle_tier: App, tmp_path: Path, form: str
) -> None:
    old, new = ClientCertificate.generate("old"), ClientCertificate.generate("new")
    password = b"pfx-pa55" if form == "pfx" else None
    encode = (lambda c: _pfx(c, b"pfx-pa55")) if form == "pfx" else _pem
    path = tmp_path / f"middle-tier.{form}"
    path.write_bytes(encode(old))
    middle_tier.certificates.append(old)
    credential = ClientCredential.certificate_file(path, passphrase=password)
    exchanger = on_behalf_of(confidential_client(authority, middle_tier, credential))
    traffic = Traffic(
        exchanger, lambda: user_identity(authority, middle_tier), downstream_scope(authority)
    )
    traffic.start()
    try:
        await traffic.completed_after(0)
        middle_tier.certificates.append(new)  # the rollover: both registered
        _replace(path, encode(new))
        await traffic.completed_after(traffic.mark())
        middle_tier.certificates.remove(old)  # rollover done: the old one is refused now
        await traffic.completed_after(traffic.mark())
    finally:
        await traffic.stop()
        await exchanger.close()
    assert traffic.failures == []
    assert len(traffic.done) >= 3 * STEP
    assert authority.requests.count(grant="obo", ok=False) == 0
    # Every call exchanged at the authority (a new user's token each time, no cache hit): the
    # calls after the old certificate was removed were signed with the new one.
    assert authority.requests.count(grant="obo", ok=True) >= 3 * STEP


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_a_federated_token_file_rotated_mid_traffic_fails_no_call(tmp_path: Path) -> None:
    clock = Clock()
    authority = DevAuthority(clock=clock)
    with authority.running_in_thread():
        world = authority.world
        app = world.add_app(
            "orders",
            scopes=["access_as_user"],
            secret=False,
            api_permissions={"downstream": ["Data.Read"]},
        )
        world.grant_consent("client", "orders", ["access_as_user"])
        subject = "system:serviceaccount:shop:orders"
        world.add_federated_credential(
            "orders", issuer=authority.workloads.issuer("dev").credential_issuer, subject=subject
        )
        path = tmp_path / "token"
        projected = authority.workloads.project(path, subject, lifetime=600)
        exchanger = on_behalf_of(
            confidential_client(authority, app, ClientCredential.federated_token_file(path))
        )
        traffic = Traffic(
            exchanger, lambda: user_identity(authority, app), downstream_scope(authority)
        )
        traffic.start()
        try:
            await traffic.completed_after(0)
            clock.now += 480  # 80% of the lifetime: the "kubelet" rotates the file
            assert authority.workloads.rotate_due() == 1
            await traffic.completed_after(traffic.mark())
            clock.now += 520  # the first token is now past exp + Entra's 5 minutes of skew
            await traffic.completed_after(traffic.mark())
        finally:
            await traffic.stop()
            await exchanger.close()
        assert traffic.failures == []
        assert projected.rotations == 1
        # NOTE: only the authority's clock jumps here; the middle tier's, which says when to
        # look at the file again (near the assertion's exp, else every minute), does not move.
        # So the rotated-out token is kept until the authority refuses it as expired: each
        # call refused so (one per worker at most) reads the rotated file and is asked again,
        # and no call fails. With one clock, the look near the exp takes the new file first.
        refused = authority.requests.matching(grant="obo", ok=False)
        assert len(refused) <= 6
        assert {(r.error, r.error_code) for r in refused} <= {("invalid_client", 700024)}
        assert authority.requests.count(grant="obo", ok=True) >= 3 * STEP


async def test_a_certificate_file_caught_half_written_keeps_the_last_good_one(
    authority: DevAuthority,
    middle_tier: App,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    old, new = ClientCertificate.generate("old"), ClientCertificate.generate("new")
    middle_tier.certificates.extend([old, new])
    path = tmp_path / "middle-tier.pem"
    path.write_bytes(_pem(old))
    credential = ClientCredential.certificate_file(path)
    exchanger = on_behalf_of(confidential_client(authority, middle_tier, credential))
    scope = downstream_scope(authority)
    try:
        with use_identity(user_identity(authority, middle_tier)):
            await exchanger.acquire([scope])
        path.write_bytes(_pem(new)[:300])  # a writer that is not atomic, caught mid-write
        for _ in range(2):
            with use_identity(user_identity(authority, middle_tier)):
                await exchanger.acquire([scope])  # still the old certificate
        warnings = [r for r in caplog.records if "does not load" in r.getMessage()]
        assert len(warnings) == 1
        path.write_bytes(_pem(new))
        middle_tier.certificates.remove(old)
        with use_identity(user_identity(authority, middle_tier)):
            await exchanger.acquire([scope])  # the complete new file is used
    finally:
        await exchanger.close()
    assert old.private_key_pem is not None
    assert old.private_key_pem.decode() not in caplog.text


async def test_a_rotated_certificate_retires_the_msal_app_built_with_the_old_one(
    authority: DevAuthority, middle_tier: App, tmp_path: Path
) -> None:
    """MSAL apps are kept per credential version so a flapping source costs nothing, but a
    source whose credential changed drops the app holding the old key: when the old
    certificate comes back, its app is built again (one discovery round trip each)."""
    old, new = ClientCertificate.generate("old"), ClientCertificate.generate("new")
    middle_tier.certificates.extend([old, new])
    path = tmp_path / "middle-tier.pem"
    path.write_bytes(_pem(old))
    credential = ClientCredential.certificate_file(path)
    exchanger = on_behalf_of(confidential_client(authority, middle_tier, credential))
    try:
        for cert in (old, new, old):
            _replace(path, _pem(cert))
            with use_identity(user_identity(authority, middle_tier)):
                await exchanger.acquire([downstream_scope(authority)])
    finally:
        await exchanger.close()
    built = [
        e
        for e in authority.requests.matching(endpoint="discovery")
        if e.path.startswith(f"/{authority.tenant_id}/")
    ]
    assert len(built) == 3
