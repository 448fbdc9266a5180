"""gendiff's version (one place; the package and the resolved recipes read it)."""

__version__ = "0.1.0"
