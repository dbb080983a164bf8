"""Developer tools run from the repository root (`python -m tools.fuzz ...`); not part of the installed toolkit."""
