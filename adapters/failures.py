"""The one failure classifier: what kind of failure ended an attempt, and so what happens next.

=================  =====================================================  ==============================
class              meaning                                                what the scheduler does
=================  =====================================================  ==============================
``data``           the input is missing or malformed (a column, a type,    give up: the same input fails
                   null keys, a corrupt file, a table Feast has not made)  the same way on any provider
``config``         the setup is wrong (a config that does not load); most  give up: fix the config
                   such mistakes are found by ``validate`` before a run
``user_code``      the transform or scorer raised or returned bad rows     retry in place (``retries``)
``infrastructure`` the provider's cluster, storage or online store failed  fail over to the next provider
``timeout``        the job's ``timeout`` passed                            give up
``cancelled``      shutdown or an operator's ``cancel``                    give up
=================  =====================================================  ==============================

Every layer's own errors say their class with a ``failure_class`` class attribute
(:class:`ProviderDown` here, the Feast writers' and materialisation errors in
``skyfeast.featurestore``, the scheduler's ``DataError``), so this module needs none
of them.  Neutral adapter errors (:mod:`.base`) are infrastructure unless they say
otherwise (``NotFound``).  Python's and pyarrow's own exceptions are classed by type:
``KeyError``, ``ValueError`` (pyarrow's ``ArrowInvalid`` for a corrupt parquet file is
one, pandas' ``OutOfBoundsDatetime`` for a timestamp in the year 2300 another),
``TypeError`` and ``UnicodeError`` come from the rows, so they are ``data``; anything
else (lost connections, killed workers, cancelled futures, a storage root that
vanished or was replaced) is the provider's, so it is ``infrastructure``.  A storage
root that is a file *before* a run is a config error that ``validate`` reports; one
that turns into a file mid-run is an outage (the storage-outage drill does that).
"""

from __future__ import annotations

from enum import Enum

from skyfeast.adapters.base import AdapterError


class FailureClass(str, Enum):
    USER_CODE = "user_code"
    DATA = "data"
    CONFIG = "config"
    INFRASTRUCTURE = "infrastructure"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


class ProviderDown(Exception):
    """The provider was declared down (its circuit opened) while an attempt waited on it."""

    failure_class = FailureClass.INFRASTRUCTURE


_DATA_TYPES = (KeyError, ValueError, TypeError, UnicodeError)


#: words of a driver's error (lower case) that say the server is not there, as opposed to a server
#: that answered and refused (a wrong password, a missing database): the ledger's and the Feast
#: registry's connection errors are told apart by them
SERVER_ABSENT = ("connection refused", "timeout expired", "timed out", "could not connect",
                 "server closed the connection", "network is unreachable", "no route to host", "connection reset",
                 "could not translate host name", "name or service not known", "temporary failure in name resolution")


def server_absent(message: str) -> bool:
    """Whether a driver's error message says its server is not there (see :data:`SERVER_ABSENT`)."""
    text = message.lower()
    return any(w in text for w in SERVER_ABSENT)


def classify(exc: BaseException) -> FailureClass:
    """The failure class of ``exc`` (see the module's table)."""
    declared = getattr(exc, "failure_class", None)
    if declared is not None:
        return FailureClass(declared)
    if isinstance(exc, AdapterError):
        return FailureClass.INFRASTRUCTURE if exc.infrastructure else FailureClass.DATA
    if isinstance(exc, _DATA_TYPES):
        return FailureClass.DATA
    return FailureClass.INFRASTRUCTURE


def is_infrastructure(exc: BaseException) -> bool:
    """True when another provider may succeed where this one failed."""
    return classify(exc) is FailureClass.INFRASTRUCTURE


def describe(exc: BaseException) -> str:
    """One line for the ledger and the user: our own errors' messages as they are, others with their type."""
    msg = str(exc) or type(exc).__name__
    if getattr(exc, "failure_class", None) is not None and not isinstance(exc, AdapterError):
        return msg
    return f"{type(exc).__name__}: {msg}"


__all__ = ["SERVER_ABSENT", "FailureClass", "ProviderDown", "classify", "describe", "is_infrastructure",
           "server_absent"]
