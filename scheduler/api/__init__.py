"""The operator API: what ``skyfeast status|runs|plan|models|trigger|cancel|cordon`` and the daemon's
HTTP API (``/api/...``, :mod:`skyfeast.scheduler.app.routes`) share, so both give the same answers.

* :mod:`.checks` – operator input: job names, times, windows (light: the CLI's ``--help`` imports it);
* :mod:`.views` – read models: status, runs, plan, the model registry (dicts ready for JSON);
* :mod:`.actions` – trigger, cancel, cordon/uncordon, promote/rollback, with their checks;
* :mod:`.auth` – who may use the HTTP API: the bearer token, loopback clients (pure decisions).

Errors are :mod:`skyfeast.scheduler.errors`'s, each with the HTTP status it maps to
(``UsageError`` 400, ``NotFound`` 404, ``Conflict`` 409).
"""
