"""The bounded soak: three Original replicas (processes, one real Redis), a Downstream API and
50 users under a steady mixed load while Redis, the authority, the signing keys and a replica
fail in turn. `tests/soak/run.py` says what runs and what is allowed; `python -m tests.soak
--report` prints the same table as the test."""
