"""TLS for Dask connections: the settings model, ``distributed.security.Security`` from file paths, and TLS
failures as neutral errors."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from skyfeast.adapters.base import AdapterError, PermissionDenied, Transient


class ClusterTLS(BaseModel):
    """Client side of mutual TLS, handed to ``distributed.security.Security``.

    Paths are relative to the config file. ``key`` may be omitted when ``cert``
    holds the private key too. (Whether the files exist is checked in
    the scheduler's config checks, where the config file's directory is known.)
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    ca_file: str = Field(min_length=1, description="CA certificate(s) the scheduler's certificate must chain to")
    cert: str = Field(min_length=1, description="client certificate (PEM)")
    key: str | None = Field(None, min_length=1, description="client private key (PEM); default: inside `cert`")
    require_encryption: bool = Field(True, description="refuse unencrypted connections")



def make_security(*, ca_file: str | Path, cert: str | Path, key: str | Path | None = None,
                  require_encryption: bool = True):
    """A client ``Security`` for mutual TLS. Paths must already be resolved (absolute).

    Raises :class:`PermissionDenied` when a file cannot be read (a missing
    credential), so a connector never starts with half a TLS setup.
    """
    from distributed.security import Security

    files = {"ca_file": ca_file, "cert": cert, **({"key": key} if key is not None else {})}
    for field, path in files.items():
        if not Path(path).is_file():
            raise PermissionDenied(f"TLS {field} {path} is not a readable file")
    # Security reads the files lazily (at the first connect); load them now so a bad
    # certificate or key is reported here, by name, instead of as a connect timeout.
    sec = Security(tls_ca_file=str(ca_file), tls_client_cert=str(cert),
                   tls_client_key=None if key is None else str(key), require_encryption=require_encryption)
    try:
        sec.get_connection_args("client")
    except (ssl.SSLError, ValueError, OSError) as exc:
        raise PermissionDenied(f"TLS files cannot be loaded ({', '.join(map(str, files.values()))}): {exc}") from exc
    return sec


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes/contexts, outermost first."""
    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def translate_comm_error(exc: BaseException, what: str) -> AdapterError | None:
    """Map a failure to reach a scheduler to a neutral error.

    TLS refused (bad or missing certificate, or TLS spoken to a plain TCP
    port and back) is :class:`PermissionDenied`: retrying will not help.
    A scheduler that does not answer in time (:class:`~skyfeast.adapters.clusters._client.SchedulerTimeout`)
    and anything else that looks like the network is :class:`Transient`.
    """
    from skyfeast.adapters.clusters._client import SchedulerTimeout

    if isinstance(exc, SchedulerTimeout):
        return Transient(f"{what}: {exc.describe(with_address=not exc.address or exc.address not in what)}")
    text = str(exc) or type(exc).__name__
    for e in _chain(exc):
        if isinstance(e, ssl.SSLError):
            return PermissionDenied(f"TLS handshake with {what} failed: {e}")
        if isinstance(e, TypeError) and "ssl_context" in str(e):
            return PermissionDenied(f"{what} requires TLS, but no TLS settings were given "
                                    "(cluster `tls: {ca_file, cert, key}`)")
    if "SSL" in text or "certificate" in text.lower():
        return PermissionDenied(f"TLS handshake with {what} failed: {text}")
    if isinstance(exc, (OSError, TimeoutError)):
        return Transient(f"cannot reach {what}: {text}")
    return None
