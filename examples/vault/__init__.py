"""The KeyVault example API (`python -m examples.vault`)."""
