"""The two-hop chain of tests/relay/test_relay.py (`hops`), for every test of the relay."""

from tests.relay.test_relay import hops

__all__ = ["hops"]
