"""Who may use the daemon's HTTP API: pure decisions, and loading the token (see docs/http.md).

* With a token configured (``daemon.http_token_env`` or ``daemon.http_token_file``), every
  action (``POST /api/...``), and with ``daemon.http_read_token`` every ``GET /api/...``, needs
  ``Authorization: Bearer <token>``: 401 without it or with another one.
* Without a token, actions are accepted from this host's own loopback address only (127.0.0.1,
  ::1), and refused with 403 from any other address, other 127.x addresses included (a container
  or a proxy on the host may own those); reads are open.

The token is compared with :func:`hmac.compare_digest`, and is never printed or logged: the
:class:`Token` holding it shows ``Token(***)``.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from skyfeast.scheduler.errors import UsageError

MIN_TOKEN = 16  # characters: a shorter token is guessable


class Token:
    """A bearer token; its value never appears in ``repr``/``str``."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value.encode()

    def matches(self, offered: str) -> bool:
        return hmac.compare_digest(self._value, offered.encode())

    def value(self) -> str:
        return self._value.decode()

    def __repr__(self) -> str:
        return "Token(***)"

    __str__ = __repr__


@dataclass(frozen=True)
class Decision:
    allowed: bool
    status: int  # 200 when allowed, 401 or 403 otherwise
    actor: str | None  # token | loopback | anonymous (an open read)
    error: str | None = None


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a client address as the server saw it) is 127.0.0.1 or ::1."""
    if not host:
        return False
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr in _LOOPBACK


_LOOPBACK = (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1"))


def decide(*, action: bool, client: str | None, authorization: str | None, token: Token | None,
           read_token: bool = False) -> Decision:
    """May this request go on? ``action``: a POST that changes state (else a read); ``client``: the
    peer's address; ``authorization``: the request's ``Authorization`` header, if any."""
    if token is None:
        if not action:
            return Decision(True, 200, "anonymous")
        if is_loopback(client):
            return Decision(True, 200, "loopback")
        return Decision(False, 403, None, "actions are accepted from loopback clients only, as no token is "
                                          "configured (daemon.http_token_env or daemon.http_token_file)")
    if not action and not read_token:
        return Decision(True, 200, "anonymous")
    scheme, _, offered = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not offered.strip():
        return Decision(False, 401, None, "this needs a bearer token: Authorization: Bearer <token>")
    if not token.matches(offered.strip()):
        return Decision(False, 401, None, "the bearer token is not valid")
    return Decision(True, 200, "token")


def load_token(settings, base_dir: Path, environ=os.environ) -> Token | None:
    """The token ``settings`` (``daemon``) names, or None when none is configured.

    :class:`UsageError` (one line, never the value) for an unset variable, an unreadable or
    group/world-readable file, or a token shorter than :data:`MIN_TOKEN` characters."""
    if settings.http_token_env:
        name = settings.http_token_env
        value = environ.get(name, "").strip()
        if not value:
            raise UsageError(f"daemon.http_token_env: the environment variable {name} is not set or empty")
        where = f"the environment variable {name}"
    elif settings.http_token_file:
        path = Path(settings.http_token_file).expanduser()
        path = path if path.is_absolute() else base_dir / path
        try:
            mode = path.stat().st_mode
            value = path.read_text().strip()
        except OSError as exc:
            raise UsageError(f"daemon.http_token_file: cannot read {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:  # its message would quote the file's bytes
            raise UsageError(f"daemon.http_token_file: {path} is not UTF-8 text") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise UsageError(f"daemon.http_token_file: {path} can be read by other users; chmod 600 it")
        where = str(path)
    else:
        return None
    if len(value) < MIN_TOKEN:
        raise UsageError(f"daemon.http_token: the token in {where} is shorter than {MIN_TOKEN} characters")
    return Token(value)


__all__ = ["MIN_TOKEN", "Decision", "Token", "decide", "is_loopback", "load_token"]
