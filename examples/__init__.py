"""Runnable examples of a Zero Trust chain with grpc_obo (see README)."""
