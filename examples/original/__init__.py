"""The Workspace example API (`python -m examples.original`)."""
