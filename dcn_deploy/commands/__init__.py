"""CLI commands: each module defines one click command over a library call."""
