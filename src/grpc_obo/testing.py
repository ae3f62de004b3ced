"""pytest plugin for grpc_obo users and our own suite (registered by the `pytest11` entry point).

Fixtures arrive with the dev authority: a session-wide authority over HTTPS and token minting.
"""
