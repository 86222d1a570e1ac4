"""Command-line entry points (``python -m experiments.<name>``), all built on ``experiments.common``."""
