"""The Original API example."""
