"""The command line ``braintumorseg``: its commands (``main``), ``segment``'s checks before any weights
are read, and the ``--cases`` batch run."""
from .main import main

__all__ = ["main"]
