"""The credential sources' own rules, on their clocks: when a federated token file is looked at
again, what a refusal makes a source do, and a refused source as the last resort.

(The same sources against the dev authority and real MSAL are in test_credential_sources.py.)
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from grpc_obo import TokenExchangeError
from grpc_obo._exchange._source_kinds import RECHECK_EVERY, REFRESH_MARGIN, FederatedTokenFile
from grpc_obo._exchange._sources import REFUSED_FOR, CredentialChain

from .conftest import FakeClock


def assertion(exp: float, label: str = "a") -> str:
    """A JWT-shaped assertion with `exp` (these rules never verify it: it is ours to send)."""

    def part(data: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part({'exp': exp, 'sub': label})}.c2lnbmF0dXJl"


class Stats:
    """Counts `os.stat` calls on one path."""

    def __init__(self, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = os.stat
        watched = str(path)

        def stat(target: object, *args: object, **kwargs: object) -> os.stat_result:
            if str(target) == watched:
                self.calls += 1
            return real(target, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "stat", stat)


def rewrite(path: Path, text: str) -> None:
    """Replace the file as the kubelet does (a new inode), whatever the clock's resolution."""
    staged = path.with_suffix(".new")
    staged.write_text(text, encoding="utf-8")
    staged.replace(path)


def test_a_fresh_assertion_is_not_looked_at_again_on_every_request(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the assertion is fresh the file is stat'ed once per RECHECK_EVERY, not per token
    request; a file replaced meanwhile is taken at the next look."""
    path = tmp_path / "token"
    path.write_text(assertion(clock.now + 3600, "first"), encoding="utf-8")
    source = FederatedTokenFile(str(path), clock)
    stats = Stats(path, monkeypatch)
    source.resolve()
    for _ in range(20):
        source.resolve()
    assert stats.calls == 1
    replaced = assertion(clock.now + 3600, "second")
    rewrite(path, replaced)
    source.resolve()
    assert source.current() != replaced  # not looked at yet
    clock.now += RECHECK_EVERY
    source.resolve()
    assert stats.calls == 2
    assert source.current() == replaced


def test_near_its_expiry_the_file_is_looked_at_for_each_request(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within REFRESH_MARGIN of the assertion's exp the kubelet's rotation is due: every
    request looks (a stat), and the rotated file is taken at once."""
    path = tmp_path / "token"
    exp = clock.now + 600
    path.write_text(assertion(exp, "first"), encoding="utf-8")
    source = FederatedTokenFile(str(path), clock)
    source.resolve()
    stats = Stats(path, monkeypatch)
    clock.now = exp - REFRESH_MARGIN + 1
    source.resolve()
    source.resolve()
    assert stats.calls == 2
    rotated = assertion(clock.now + 600, "rotated")
    rewrite(path, rotated)
    source.resolve()
    assert source.current() == rotated


def test_a_refused_assertion_makes_the_file_be_looked_at_at_once(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The authority refused the assertion: a file changed since is read now (the request is
    asked again with it); an unchanged one is looked at again by the next request."""
    path = tmp_path / "token"
    path.write_text(assertion(clock.now + 3600, "refused"), encoding="utf-8")
    chain = CredentialChain([FederatedTokenFile(str(path), clock)], clock=clock)
    first = chain.resolve().version
    assert not chain.refused(first, [700213])  # nothing else to offer: the error stands
    replaced = assertion(clock.now + 3600, "replaced")
    rewrite(path, replaced)
    assert chain.refused(first, [700213])  # changed since: ask again with the new one
    assert chain.sources[0].current() == replaced  # type: ignore[attr-defined]
    # Requests that raced the first refusal with the same old assertion are asked again too...
    assert chain.refused(first, [700213])
    second = chain.resolve().version
    assert second == first  # the same source: the MSAL app built for it is kept
    # ...but a refusal of the new one, unchanged, stands: no loop.
    assert not chain.refused(second, [700213])
    rewrite(path, assertion(clock.now + 3600, "third"))
    chain.resolve()  # an unchanged refused file is looked at again by the next request
    assert chain.sources[0].current() != replaced  # type: ignore[attr-defined]


def test_a_refused_source_is_tried_again_when_every_later_one_is_unavailable(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Skipping a refused source for REFUSED_FOR helps only if a later one works: when none
    does, the refused one is tried again rather than failing without asking."""
    first, missing = tmp_path / "first", tmp_path / "missing"
    first.write_text(assertion(clock.now + 3600), encoding="utf-8")
    chain = CredentialChain(
        [FederatedTokenFile(str(first), clock), FederatedTokenFile(str(missing), clock)],
        clock=clock,
    )
    version = chain.resolve().version
    assert chain.refused(version, [700213])  # a later source exists: try it
    assert chain.resolve().version == version  # it cannot be read: the refused one again
    assert not chain.refused(version, [700213])  # refused as the last resort: the error stands
    missing.write_text(assertion(clock.now + 3600), encoding="utf-8")
    clock.now += RECHECK_EVERY
    assert chain.resolve().version != version  # the later one works now: preferred
    clock.now += REFUSED_FOR
    assert chain.resolve().version == version  # the skip is over: the first again


def test_when_no_source_works_at_all_the_error_names_each(tmp_path: Path, clock: FakeClock) -> None:
    chain = CredentialChain([FederatedTokenFile(str(tmp_path / "none"), clock)], clock=clock)
    with pytest.raises(TokenExchangeError, match="cannot be read"):
        chain.resolve()
