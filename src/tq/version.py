"""tq's version, importable without the public namespace (which pulls in client and worker)."""

__version__ = "0.1.0"
