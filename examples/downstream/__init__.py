"""The DocumentStore example API (`python -m examples.downstream`)."""
