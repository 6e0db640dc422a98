"""edge-runtime: the board side. Imports numpy and one inference engine, nothing heavier."""

__version__ = "0.1.0"
