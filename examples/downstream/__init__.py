"""The Downstream API example."""
