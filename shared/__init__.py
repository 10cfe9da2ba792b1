"""sdgate's importable library: everything that runs without Modal."""

__version__ = "0.1.0"
