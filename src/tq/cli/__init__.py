"""The ``tq`` command line: the only place that reads argv and configures logging."""

from tq.cli.main import broker_main, cli, main, worker_main

__all__ = ["broker_main", "cli", "main", "worker_main"]
