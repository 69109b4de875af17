"""The status page: ``GET /`` and ``GET /status``, server-rendered HTML (Jinja2, autoescaped) of
:func:`~skyfeast.scheduler.app.page_model.page_view` (see docs/http.md).

Who may read it follows the JSON API's reads. Without ``daemon.http_read_token`` it is open.
With it, the page needs the token: as ``Authorization: Bearer`` (scripts), or, for a browser, a
session cookie that ``POST /login`` sets after checking the token typed into its form. The
cookie is ``HttpOnly`` and ``SameSite=Strict`` and holds an expiry and an HMAC of it keyed by
the token, never the token: it dies with its expiry (:data:`SESSION_TTL`) or with a new token.
A token in the URL is never accepted (it would land in logs and history).

The page's one action (cordon / uncordon a provider) is a few lines of JS calling the JSON
endpoint (``POST /api/providers/{name}/cordon``) with the bearer token typed into a password
field, so its authentication and audit are the API's own.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from skyfeast.scheduler.api.auth import decide

log = logging.getLogger("skyfeast.http")
COOKIE = "skyfeast_session"
SESSION_TTL = 12 * 3600  # seconds a login lasts
REFRESH = 10  # seconds between the page's reloads
TEMPLATES = Path(__file__).with_name("templates")


def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"], default=True),
                      undefined=StrictUndefined)
    env.filters["age"] = _age
    return env


def _age(seconds: float | None) -> str:
    """``seconds`` as a short age (``42s``, ``7m``, ``3h12m``, ``2d4h``); ``—`` for None."""
    if seconds is None:
        return "—"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def session_value(token, expires: int) -> str:
    """The cookie for a login valid until ``expires`` (Unix seconds): the expiry and its HMAC keyed by the token."""
    mac = hmac.new(token.value().encode(), f"skyfeast-page:{expires}".encode(), hashlib.sha256).hexdigest()
    return f"{expires}.{mac}"


def session_valid(token, cookie: str | None, now: float | None = None) -> bool:
    expires, _, _ = (cookie or "").partition(".")
    if not expires.isdigit() or int(expires) < (now or time.time()):
        return False
    return hmac.compare_digest(session_value(token, int(expires)), cookie or "")


def install_page(app: FastAPI, api) -> None:
    """Add ``/``, ``/status``, ``/login`` and ``/logout`` to ``app``, over ``api`` (a routes.Api)."""
    from skyfeast.scheduler.app.page_model import page_view
    from skyfeast.scheduler.app.routes import failure

    env = _environment()
    read_token = api.cfg.daemon.http_read_token and api.token is not None

    def may_read(request: Request) -> bool:
        if not read_token:
            return True
        if session_valid(api.token, request.cookies.get(COOKIE)):
            return True
        return decide(action=False, client=request.client.host if request.client else None, token=api.token,
                      authorization=request.headers.get("authorization"), read_token=True).allowed

    def login_page(error: str | None = None, status: int = 401) -> HTMLResponse:
        return HTMLResponse(env.get_template("login.html").render(project=api.cfg.project, error=error),
                            status_code=status)

    def page(request: Request) -> Response:
        if not may_read(request):
            return login_page()
        try:
            with api.slot():
                data = page_view(api)
        except Exception as exc:
            status, message, _ = failure(exc, f"GET {request.url.path}")
            return HTMLResponse(env.get_template("error.html").render(message=message), status_code=status)
        html = env.get_template("status.html").render(
            **data, refresh=REFRESH, needs_token=api.token is not None, logged_in=read_token)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    app.get("/", response_class=HTMLResponse)(page)
    app.get("/status", response_class=HTMLResponse)(page)

    @app.post("/login")
    async def login(request: Request):
        if not read_token:
            return RedirectResponse("/", status_code=303)
        form = parse_qs((await request.body()).decode(errors="replace"))
        offered = (form.get("token") or [""])[0].strip()
        client = request.client.host if request.client else None
        if not offered or not api.token.matches(offered):
            log.warning("refused a page login from %s: the token is not valid", client)
            return login_page("The token is not valid.")
        expires = int(time.time()) + SESSION_TTL
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, session_value(api.token, expires), max_age=SESSION_TTL, httponly=True,
                            samesite="strict", path="/")
        log.info("page login from %s", client)
        return response

    @app.post("/logout")
    def logout():
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response


__all__ = ["COOKIE", "SESSION_TTL", "install_page", "session_valid", "session_value"]
