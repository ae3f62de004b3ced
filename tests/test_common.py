"""The small shared forms (`grpc_obo._common`): one GUID rule, one loopback rule, one LRU."""

from __future__ import annotations

import pytest

from grpc_obo._common import LRU, is_guid, is_loopback, with_scheme


def test_a_guid_in_any_case_and_the_lowercase_form_entra_puts_in_tokens() -> None:
    guid = "0f3c6b3e-6a51-4f4e-9f2b-3c1d2e4f5a6b"
    assert is_guid(guid) and is_guid(guid.upper())
    assert is_guid(guid, lowercase=True) and not is_guid(guid.upper(), lowercase=True)
    for bad in (guid + "\n", guid[:-1], f"{{{guid}}}", None, 7, ""):
        assert not is_guid(bad)


def test_a_bare_authority_host_means_https() -> None:
    assert with_scheme(" login.example/ ") == "https://login.example"
    assert with_scheme("http://127.0.0.1:9") == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("host", "literal", "by_name"),
    [
        ("127.0.0.1", True, True),
        ("::1", True, True),
        ("::ffff:127.0.0.1", True, True),
        ("localhost", False, True),
        ("LOCALHOST.", False, True),
        ("10.0.0.1", False, False),
        ("example.com", False, False),
        ("", False, False),
        (None, False, False),
    ],
)
def test_loopback_is_an_ip_literal_unless_names_are_asked_for(
    host: str | None, literal: bool, by_name: bool
) -> None:
    assert is_loopback(host) is literal
    assert is_loopback(host, by_name=True) is by_name


def test_the_lru_forgets_the_least_recently_used_first() -> None:
    lru: LRU[str, int] = LRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # a use: "b" is now the oldest
    lru.put("c", 3)
    assert list(lru) == ["a", "c"] and "b" not in lru and len(lru) == 2
    assert lru.peek("a") == 1 and list(lru) == ["a", "c"]  # a peek is not a use
    assert lru.pop("a") == 1 and lru.pop("a") is None
    lru.clear()
    assert len(lru) == 0 and lru.get("c") is None
    with pytest.raises(ValueError):
        LRU(0)
