"""The package version, in one place (the package and its telemetry both report it)."""

__version__ = "0.1.0"
