"""aetnet's version: what ``aetnet.__version__`` reports and what keys the window cache (a module of its own, so
that the data layer reads it without importing the package's public API)."""

__version__ = "0.1.0"
