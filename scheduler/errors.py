"""Errors a user can act on.

Every error that should end the CLI with exit status 2 and *no traceback*
derives from :class:`UserError`.  The tree::

    UserError                 exit 2, message printed as-is
    ├── ConfigError           one or more problems in skyfeast.yaml (file:line: key: why)
    ├── DataError             source data is missing or malformed for a window
    └── UsageError            bad CLI argument (unknown job, bad time string, ...)
        ├── NotFound          no such job, run, provider or model (HTTP 404)
        └── Conflict          the request cannot apply to the current state (HTTP 409)

    JobFailed                 a run failed; CLI exits 1 (summary already printed)

Each knows the HTTP status the daemon's API answers it with (``http_status``: 400
unless said otherwise). Infrastructure errors from clouds live in :mod:`skyfeast.adapters.base`.
"""

from __future__ import annotations

from dataclasses import dataclass


class UserError(Exception):
    """An error caused by input the user controls. Printed without a traceback.

    In a run it is a ``data`` failure: the same input fails the same way on any provider."""

    exit_code = 2
    failure_class = "data"
    http_status = 400


@dataclass(frozen=True)
class Problem:
    """One config problem, located as precisely as the loader could."""

    file: str
    line: int | None
    path: str
    message: str
    # a server the config names could not be reached (the Feast registry's): not the config's fault,
    # and it may answer on the next start
    unreachable: bool = False

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = f" {self.path}:" if self.path else ""
        return f"{where}:{key} {self.message}"


class ConfigError(UserError):
    """The config file is invalid. Carries every problem found, each with file/line/key.

    When every problem is a server the config names that could not be reached, it is not the
    config's fault: exit status 1 and class ``infrastructure``, so that a supervisor restarts a
    daemon that met it (its unit keeps exit 2, bad config, down)."""

    failure_class = "config"

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        if self.problems and all(p.unreachable for p in self.problems):
            self.exit_code, self.failure_class, self.http_status = 1, "infrastructure", 503
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.problems)
        what = "unreachable" if self.failure_class == "infrastructure" else "invalid config"
        head = f"{what} ({n} problem{'s' if n != 1 else ''}):"
        return "\n".join([head, *(f"  {p}" for p in self.problems)])


class Unavailable(UserError):
    """A server the command needs (the Feast registry's) could not be reached: exit status 1."""

    exit_code = 1
    failure_class = "infrastructure"
    http_status = 503


class DataError(UserError):
    """Source data for a window is missing or does not have the expected shape."""


class UsageError(UserError):
    """A command-line argument (or an API request's parameter) is wrong."""


class NotFound(UsageError, LookupError):
    """The job, run, provider or model named does not exist."""

    http_status = 404


class Conflict(UsageError):
    """The request is well formed but cannot apply now (e.g. an alias with nothing to roll back to)."""

    http_status = 409


class JobFailed(Exception):
    """Raised by the CLI layer when at least one run did not succeed."""

    exit_code = 1
