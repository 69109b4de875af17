"""``skyfeast`` command line.

Exit status: 0 success; 1 a run failed; 2 bad config, data or arguments
(one readable message, never a traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from datetime import timezone

from skyfeast.scheduler import __version__
from skyfeast.scheduler.errors import UserError

UTC = timezone.utc
EPILOG = """exit status: 0 ok, 1 a run failed or a server (ledger, Feast registry) did not answer,
2 bad config/data/arguments.
docs: README.md, docs/cli.md and docs/config.md"""


COMMANDS = ("validate", "plan", "run", "daemon", "status", "ops", "drill", "materialize", "models")
"""Command modules of this package, in ``--help`` order; each has ``register(subparsers)``, which adds its
subcommand(s) with ``set_defaults(func=...)`` (and ``starts_clusters=True`` when it starts Dask clusters).
Their top-level imports stay light: all load for ``--help``."""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="skyfeast", description="Schedule feature and model jobs on Dask "
                                 "clusters across clouds and materialise them into Feast.", epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"skyfeast {__version__}")
    ap.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for Dask logs)")
    ap.add_argument("--debug", action="store_true", help="show tracebacks for internal errors")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"skyfeast.scheduler.cli.{name}").register(sub)
    for p in sub.choices.values():  # `skyfeast run -v` as well as `skyfeast -v run`
        p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return ap


def _setup_logging(verbose: int, *, dask: bool = True) -> None:
    """Logging for a command; ``dask=False`` for a command that starts no cluster, or imports
    distributed only when it needs one (``materialize``) and then calls :func:`quiet_libraries` itself."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    if dask:
        import distributed  # noqa: F401  (configures its loggers on import; override them below)

    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    quiet_libraries(verbose)
    logging.getLogger("skyfeast").setLevel(level)
    # a wait past two seconds always says what it waits for: a spinner on a terminal, else one log line
    logging.getLogger("skyfeast.wait").setLevel(min(level, logging.INFO))
    from skyfeast.adapters.waiting import set_notifier

    set_notifier(_spinner if sys.stderr.isatty() else None)


def quiet_libraries(verbose: int) -> None:
    """Only -vv shows the libraries' logs.  Dask logs reconnect attempts of clients whose cluster
    we shut down ourselves, with tracebacks; skyfeast reports failures of runs in its own words.
    Call again after importing distributed, whose import sets its loggers' levels."""
    quiet = logging.CRITICAL if verbose < 2 else logging.INFO
    for name in list(logging.root.manager.loggerDict):  # children too: dask config sets their levels
        if name.split(".")[0] in ("distributed", "dask", "feast", "tornado", "asyncio", "apscheduler"):
            logging.getLogger(name).setLevel(quiet)
    for noisy in ("distributed", "dask", "feast", "tornado", "asyncio", "apscheduler"):
        logging.getLogger(noisy).setLevel(quiet)


def _spinner(text: str):
    """A rich spinner on stderr until the wait ends; a plain line while another live display runs."""
    from rich.errors import LiveError

    from skyfeast.scheduler.cli.console import err

    status = err.status(text)
    try:
        status.start()
    except LiveError:  # a run's progress bars are live: one line above them
        err.print(text, markup=False)
        return None
    return status.stop


def main(argv: list[str] | None = None) -> int:
    """Run one command.  ``argv`` None means this is the process's own command line: a command
    that has printed its result and deliberately left resources to the process's end (it sets
    ``args.exit_at_once``, as ``materialize`` does after killing its local cluster) then ends
    the process at once, after flushing, instead of waiting for interpreter teardown."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.process_exit = argv is None
    # a command that starts Dask clusters says so (``starts_clusters``: True, or a function of its
    # arguments); the others start without distributed's import (about 0.4 s)
    starts = getattr(args, "starts_clusters", False)
    _setup_logging(args.verbose, dask=starts(args) if callable(starts) else starts)
    try:
        code = args.func(args)
        if getattr(args, "exit_at_once", False):
            sys.stdout.flush()
            sys.stderr.flush()
            logging.shutdown()
            os._exit(code)
        return code
    except UserError as exc:
        sys.stderr.write(f"skyfeast: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("skyfeast: interrupted\n")
        return 130
    except Exception as exc:
        from skyfeast.featurestore.repo import FeastRepoError

        if isinstance(exc, FeastRepoError):
            sys.stderr.write(f"skyfeast: error: {exc}\n")
            return 1 if exc.failure_class == "infrastructure" else 2  # a registry that did not answer
        if args.debug:
            raise
        sys.stderr.write(f"skyfeast: internal error: {type(exc).__name__}: {exc}\n"
                         "(re-run with --debug for a traceback, and please report it)\n")
        return 70


if __name__ == "__main__":
    sys.exit(main())
