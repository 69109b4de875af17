"""The ``skyfeast`` command line: :func:`main` parses, and each command module registers its subcommand."""

from skyfeast.scheduler.cli.main import main

__all__ = ["main"]
