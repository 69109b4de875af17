"""The daemon's JSON API (``/api/...``, see docs/http.md): the operator API of
:mod:`skyfeast.scheduler.api` over HTTP, on the daemon's own ledger, pool and Feast repo.

* Reads (``GET``) answer what the CLI's ``--json`` answers: the same functions build both.
* Actions (``POST``) make the CLI's checks; each one that passes authentication is recorded
  in the ledger's ``skyfeast_actions``, accepted or refused (:meth:`Ledger.record_action`).
  ``POST /api/drills`` answers 202 and runs the drill in the background
  (:class:`~skyfeast.scheduler.app.drills.DrillStarter`); ``GET /api/drills[/{id}]`` reads the
  ledger's drill reports.
* Who may do what is :func:`skyfeast.scheduler.api.auth.decide`, applied before routing, so
  an unauthenticated request learns nothing about its body or the path's target.

Handlers are plain functions: uvicorn runs them in its thread pool, never on the event loop,
and at most :data:`MAX_CONCURRENT` of them hold ledger connections at a time (more wait up to
:data:`SLOT_WAIT` seconds, then get 503), so the API cannot take the connections dispatch needs.
Errors are JSON ``{"error": ...}`` with the status the error carries (400, 404, 409, 422),
503 when the ledger is unavailable, 500 otherwise (details in the daemon's log only).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Literal

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from skyfeast.scheduler.api import actions, views
from skyfeast.scheduler.api.auth import Token, decide
from skyfeast.scheduler.errors import NotFound, UsageError, UserError

log = logging.getLogger("skyfeast.http")
MAX_CONCURRENT = 4  # API handlers using the ledger at once
MAX_BODY = 64 * 1024  # bytes of an action's JSON body
MAX_ERRORS = 5  # validation errors named in one answer
MAX_ID = 2**31 - 1  # ledger ids are 32-bit integers in PostgreSQL
SLOT_WAIT = 5.0  # seconds a handler waits for one of them before answering 503
CHAMPION = "champion"
RUN_STATES = Literal["queued", "running", "interrupted", "succeeded", "partial", "failed", "cancelled", "upstream_failed"]
DRILL_MODES = Literal["kill", "hang", "partition", "storage-outage"]  # skyfeast.scheduler.drills.faults.MODES


class Unprocessable(UsageError):
    """A request body that is not the JSON object the action takes."""

    http_status = 422


class NoDrills(UsageError):
    """This server was started without a runtime to run drills in."""

    http_status = 503


class Busy(Exception):
    """Every API slot stayed taken for :data:`SLOT_WAIT` seconds."""


class _Body(BaseModel):
    # strict: JSON's own types only (``"version": "1"`` or ``true`` is not version 1, ``"yes"`` not true)
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, strict=True)


class TriggerBody(_Body):
    job: str = Field(min_length=1, max_length=128)
    window: str | None = Field(None, max_length=200, description="START/END; default: the latest complete window")
    allow_off_grid: bool = False


class ReasonBody(_Body):
    reason: str | None = Field(None, max_length=1000)


class PromoteBody(ReasonBody):
    version: int = Field(ge=1, le=2**31 - 1)
    alias: str = Field(CHAMPION, max_length=64)


class RollbackBody(ReasonBody):
    alias: str = Field(CHAMPION, max_length=64)


class DrillBody(_Body):
    provider: str = Field(min_length=1, max_length=64)
    mode: DRILL_MODES = "kill"
    job: str | None = Field(None, min_length=1, max_length=128, description="default: the first that can fail over")
    at: str | None = Field(None, max_length=64, description="drill the latest complete window at this time")


class Api:
    """What ``/api`` reads and acts on: one daemon's config, ledger, provider pool, Feast repo, its
    token (None: actions from loopback clients only), and what starts its drills (a
    :class:`~skyfeast.scheduler.app.drills.DrillStarter`; None: ``POST /api/drills`` answers 503)."""

    def __init__(self, *, cfg, ledger, pool, repo, token: Token | None, drills=None):
        from skyfeast.featurestore.models import ModelRegistry

        self.cfg, self.ledger, self.pool, self.repo, self.token = cfg, ledger, pool, repo, token
        self.drills = drills
        self.registry = ModelRegistry(ledger.engine)
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT)

    @contextmanager
    def slot(self):
        if not self._slots.acquire(timeout=SLOT_WAIT):
            raise Busy
        try:
            yield
        finally:
            self._slots.release()


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def failure(exc: BaseException, what: str) -> tuple[int, str, str]:
    """(status, message for the client, outcome) of an exception a handler raised."""
    from sqlalchemy.exc import SQLAlchemyError

    from skyfeast.scheduler.ledger import Fenced

    if isinstance(exc, UserError):
        return exc.http_status, str(exc), "refused"
    if isinstance(exc, Busy):
        return 503, f"the API is busy ({MAX_CONCURRENT} requests in progress); try again", "failed"
    if isinstance(exc, Fenced):
        return 503, "this daemon lost the leader lease; ask the other one", "failed"
    if isinstance(exc, SQLAlchemyError):
        log.warning("%s: the ledger failed: %s", what, type(exc).__name__, exc_info=exc)
        return 503, "the ledger is unavailable; see the daemon's log", "failed"
    log.error("%s failed", what, exc_info=exc)
    return 500, "internal error; see the daemon's log", "failed"


def _parse(body: bytes, model: type[_Body]) -> _Body:
    """``body`` (JSON, or empty for the defaults) as ``model``; :class:`Unprocessable` naming each bad field."""
    try:
        return model.model_validate_json(body) if body.strip() else model.model_validate({})
    except ValidationError as exc:
        # the messages only: pydantic's errors also quote the input; the first few (a body of a million
        # unknown keys made a 39 MB answer)
        errors = exc.errors(include_url=False)
        more = f"; and {len(errors) - MAX_ERRORS:,} more" if len(errors) > MAX_ERRORS else ""
        raise Unprocessable("; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
                                      for e in errors[:MAX_ERRORS]) + more) from None


class TooLarge(UsageError):
    """A request body over :data:`MAX_BODY` bytes."""

    http_status = 413


async def _raw_body(request: Request) -> bytes:
    """The request's body, at most :data:`MAX_BODY` bytes (an action's body is a few hundred): a larger one
    is refused as it arrives, before it is parsed."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise TooLarge(f"the body is {int(declared):,} bytes; an action takes at most {MAX_BODY:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise TooLarge(f"the body is over {MAX_BODY:,} bytes; an action takes at most {MAX_BODY:,}")
        chunks.append(chunk)
    return b"".join(chunks)


def install(app: FastAPI, api: Api) -> None:
    """Add ``/api/...``, its authentication and its error handling to ``app``."""
    read_token = api.cfg.daemon.http_read_token

    @app.middleware("http")
    async def authenticate(request: Request, call_next):
        if not request.url.path.startswith("/api/"):
            return await call_next(request)
        client = request.client.host if request.client else None
        if request.method == "POST" and \
                request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            # a browser sends a cross-site form or text/plain POST without asking; a JSON one needs a
            # CORS preflight this server never grants, so no other site can act through a local browser
            return _error(415, "actions take a JSON body: send Content-Type: application/json")
        d = decide(action=request.method not in ("GET", "HEAD"), client=client, token=api.token,
                   authorization=request.headers.get("authorization"), read_token=read_token)
        if not d.allowed:
            log.warning("refused %s %s from %s: %s", request.method, request.url.path, client, d.error)
            return _error(d.status, d.error or "refused", {"WWW-Authenticate": "Bearer"} if d.status == 401 else None)
        request.state.actor = d.actor
        return await call_next(request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        """Routing's own errors (no such path, a method the path does not take) in the API's format."""
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(TooLarge)
    async def too_large(request: Request, exc: TooLarge):
        return _error(413, str(exc))

    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, exc: ClientDisconnect):
        """The caller left before its body arrived: nothing to answer, and nothing to log as a crash."""
        log.info("%s %s: the client disconnected before sending its body", request.method, request.url.path)
        return Response(status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        message = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or e['loc'][0]}: {e['msg']}" for e in detail)
        return JSONResponse({"error": message, "detail": detail}, status_code=422)

    def answer(request: Request, fn: Callable[[], Any]) -> JSONResponse:
        try:
            with api.slot():
                return JSONResponse(fn())
        except Exception as exc:
            status, message, _ = failure(exc, f"GET {request.url.path}")
            return _error(status, message)

    def act(request: Request, action: str, target: str, body: bytes, model: type[_Body],
            fn: Callable[[Any], dict[str, Any]], accepted: int = 200) -> JSONResponse:
        """Run one action and record it (accepted, refused, or failed) in the ledger; ``accepted``
        is the status of success (202 for one that goes on in the background)."""
        actor = request.state.actor
        source = request.client.host if request.client else None
        params: dict[str, Any] = {}
        try:
            args = _parse(body, model)
            params = args.model_dump(mode="json")
            with api.slot():
                result = fn(args)
            status, outcome, error = accepted, "accepted", None
        except Exception as exc:
            status, error, outcome = failure(exc, f"action {action} {target}")
            result = {"error": error}
        try:
            result_id = api.ledger.record_action(action, target, params, source=source, actor=actor,
                                                 outcome=outcome, error=error)
            if status == accepted:
                result = {**result, "action_id": result_id}
        except Exception as exc:  # the action itself is done (or refused): say so, and that its record is missing
            log.error("action %s %s (%s) could not be recorded in the ledger: %s", action, target, outcome,
                      type(exc).__name__)
        log.info("action %s %s by %s from %s: %s%s", action, target, actor, source, outcome,
                 f" ({error})" if error else "")
        return JSONResponse(result, status_code=status)

    def by(request: Request) -> str:
        return f"http:{request.state.actor}"

    # ---------------------------------------------------------------- reads
    @app.get("/api/status")
    def status(request: Request, limit: int = Query(10, ge=1, le=1000)):
        return answer(request, lambda: views.status_view(api.cfg, api.ledger, api.pool, api.repo, limit=limit,
                                                          check_storage=False))

    @app.get("/api/runs")
    def runs(request: Request, job: str | None = Query(None, max_length=128), status: RUN_STATES | None = None,
             limit: int = Query(50, ge=1, le=1000), drills: bool = False):
        return answer(request, lambda: views.runs_view(api.cfg, api.ledger, job=job, status=status, limit=limit,
                                                        drills=drills))

    @app.get("/api/plan")
    def plan(request: Request, count: int = Query(3, ge=1, le=1000), at: str | None = Query(None, max_length=64)):
        from skyfeast.scheduler.api.checks import parse_time_arg

        def view():
            when = datetime.now(timezone.utc) if at is None else parse_time_arg(at, "at")
            return views.plan_view(api.cfg, when, count)

        return answer(request, view)

    @app.get("/api/models")
    def models(request: Request):
        return answer(request, lambda: views.models_view(api.registry))

    @app.get("/api/models/{name}")
    def model(request: Request, name: str, version: int | None = Query(None, ge=1, le=MAX_ID)):
        return answer(request, lambda: views.model_view(api.registry, name, version))

    @app.get("/api/models/{name}/history")
    def history(request: Request, name: str, alias: str | None = Query(None, max_length=64)):
        return answer(request, lambda: views.history_view(api.registry, name, alias))

    @app.get("/api/actions")
    def audit(request: Request, limit: int = Query(50, ge=1, le=1000)):
        return answer(request, lambda: {"actions": api.ledger.actions(limit)})

    @app.get("/api/drills")
    def drills(request: Request, limit: int = Query(20, ge=1, le=1000)):
        return answer(request, lambda: {"drills": api.ledger.drill_reports(limit),
                                        "running_here": api.drills.current if api.drills else None})

    @app.get("/api/drills/{drill_id}")
    def drill(request: Request, drill_id: int = Path(ge=1, le=MAX_ID)):
        def view():
            row = api.ledger.drill_report(drill_id)
            if row is None:
                raise NotFound(f"no drill with id {drill_id}")
            return row

        return answer(request, view)

    # ---------------------------------------------------------------- actions
    @app.post("/api/trigger")
    def trigger(request: Request, body: bytes = Depends(_raw_body)):
        def run(a: TriggerBody):
            return actions.trigger(api.cfg, api.ledger, a.job, a.window, allow_off_grid=a.allow_off_grid,
                                   flag="window")
        # the target is the job asked for, even when the body does not parse
        return act(request, "trigger", _peek(body, "job"), body, TriggerBody, run)

    @app.post("/api/runs/{run_id}/cancel")
    def cancel(request: Request, run_id: str, body: bytes = Depends(_raw_body)):
        def run(_: ReasonBody):
            if not (run_id.isascii() and run_id.isdigit()):
                raise UsageError(f"run id {run_id[:40]!r} is not a whole number")
            if int(run_id) > MAX_ID:
                raise UsageError(f"run id {run_id[:40]} is out of range (at most {MAX_ID})")
            return actions.cancel(api.ledger, int(run_id))
        return act(request, "cancel", run_id, body, ReasonBody, run)

    @app.post("/api/providers/{name}/cordon")
    def cordon(request: Request, name: str, body: bytes = Depends(_raw_body)):
        return act(request, "cordon", name, body, ReasonBody,
                   lambda a: actions.cordon(api.cfg, api.ledger, name, reason=a.reason, actor=by(request)))

    @app.post("/api/providers/{name}/uncordon")
    def uncordon(request: Request, name: str, body: bytes = Depends(_raw_body)):
        return act(request, "uncordon", name, body, ReasonBody, lambda a: actions.uncordon(api.cfg, api.ledger, name))

    @app.post("/api/models/{name}/promote")
    def promote(request: Request, name: str, body: bytes = Depends(_raw_body)):
        return act(request, "promote", name, body, PromoteBody,
                   lambda a: actions.promote(api.registry, name, a.version, a.alias, reason=a.reason,
                                             actor=by(request), mlflow_uri=api.cfg.mlflow_tracking_uri))

    @app.post("/api/drills")
    def start_drill(request: Request, body: bytes = Depends(_raw_body)):
        def run(a: DrillBody):
            if api.drills is None:
                raise NoDrills("this server runs no drills (it has no runtime); use `skyfeast drill`")
            return api.drills.start(a.provider, a.mode, a.job, a.at)
        return act(request, "drill", _peek(body, "provider"), body, DrillBody, run, accepted=202)

    @app.post("/api/models/{name}/rollback")
    def rollback(request: Request, name: str, body: bytes = Depends(_raw_body)):
        return act(request, "rollback", name, body, RollbackBody,
                   lambda a: actions.rollback(api.registry, name, a.alias, reason=a.reason, actor=by(request),
                                              mlflow_uri=api.cfg.mlflow_tracking_uri))


def _peek(body: bytes, key: str) -> str:
    """``body[key]`` if the body is a JSON object with a string there, else ``?`` (for the audit's target)."""
    import json

    try:
        value = json.loads(body or b"{}").get(key)
    except (ValueError, AttributeError):
        return "?"
    return value[:128] if isinstance(value, str) else "?"


__all__ = ["MAX_CONCURRENT", "Api", "failure", "install"]
