"""The ``tq`` command line: the only place that reads argv and configures logging."""

from tq.cli.main import cli, main

__all__ = ["cli", "main"]
