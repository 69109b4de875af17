"""The failure table of docs/data-safety.md as code: each fault, raised for real where it can be,
→ its class (skyfeast.adapters.failures.classify) → whether the runner retries it in place or fails
over (skyfeast.scheduler.control.policy.next_step)."""

from __future__ import annotations

import io

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from skyfeast.adapters.base import NotFound, PermissionDenied, Transient
from skyfeast.adapters.failures import FailureClass, ProviderDown, classify
from skyfeast.featurestore.chunks import Cancelled, TimeoutExpired
from skyfeast.featurestore.online import OutputSchemaError
from skyfeast.scheduler.control.policy import Step, next_step
from skyfeast.scheduler.errors import ConfigError, DataError, Problem
from skyfeast.scheduler.run.executor import UserCodeError


def _raised(fn) -> BaseException:
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - the point is to catch what the library raises
        return exc
    raise AssertionError("expected an exception")


def _truncated_parquet():
    buf = io.BytesIO()
    pq.write_table(pa.table({"x": list(range(100))}), buf)
    pq.read_table(io.BytesIO(buf.getvalue()[:200]))


def _not_a_directory(tmp_path):
    (tmp_path / "root").write_text("a file where the storage root should be")
    (tmp_path / "root" / "offline").mkdir()


def _killed_worker():
    from distributed.scheduler import KilledWorker

    raise KilledWorker("task", "tcp://127.0.0.1:1", allowed_failures=3)


def _comm_closed():
    from distributed.comm.core import CommClosedError

    raise CommClosedError("in <TCP (closed)>: Stream is closed")


FAULTS = [
    # (name, make the exception, class, retried in place, fails over)
    ("truncated parquet file", lambda tmp: _truncated_parquet(), FailureClass.DATA, False, False),
    ("timestamps in the year 2300", lambda tmp: pd.to_datetime(["2300-01-01"]).astype("datetime64[ns]"),
     FailureClass.DATA, False, False),
    ("a string in an int64 column", lambda tmp: pa.array(["12x"]).cast(pa.int64()), FailureClass.DATA, False, False),
    ("an input file breaking its contract", lambda tmp: (_ for _ in ()).throw(DataError("1,204 null user_id values")),
     FailureClass.DATA, False, False),
    ("an object the store does not hold", lambda tmp: (_ for _ in ()).throw(NotFound("no such key")),
     FailureClass.DATA, False, False),
    ("the transform raises", lambda tmp: (_ for _ in ()).throw(UserCodeError("t:f raised KeyError on chunk 0: 'x'")),
     FailureClass.USER_CODE, True, False),
    ("source rows lack a view column (drop-in materialize)",
     lambda tmp: (_ for _ in ()).throw(OutputSchemaError("lacks column(s) ['a']")),
     FailureClass.DATA, False, False),
    ("a storage root replaced by a file mid-run (validate refuses one before)", _not_a_directory,
     FailureClass.INFRASTRUCTURE, False, True),
    ("an invalid config", lambda tmp: (_ for _ in ()).throw(ConfigError([Problem("f", 1, "k", "bad")])),
     FailureClass.CONFIG, False, False),
    ("a killed worker", lambda tmp: _killed_worker(), FailureClass.INFRASTRUCTURE, False, True),
    ("a closed connection to the scheduler", lambda tmp: _comm_closed(), FailureClass.INFRASTRUCTURE, False, True),
    ("a refused connection", lambda tmp: (_ for _ in ()).throw(ConnectionRefusedError(111, "refused")),
     FailureClass.INFRASTRUCTURE, False, True),
    ("a storage root that vanished", lambda tmp: open(tmp / "gone" / "part.parquet", "rb"),
     FailureClass.INFRASTRUCTURE, False, True),
    ("an unreachable storage", lambda tmp: (_ for _ in ()).throw(Transient("timed out")),
     FailureClass.INFRASTRUCTURE, False, True),
    ("credentials refused", lambda tmp: (_ for _ in ()).throw(PermissionDenied("403")),
     FailureClass.INFRASTRUCTURE, False, True),
    ("the health monitor marked the provider down", lambda tmp: (_ for _ in ()).throw(ProviderDown("aws is down")),
     FailureClass.INFRASTRUCTURE, False, True),
    ("the job's timeout passed", lambda tmp: (_ for _ in ()).throw(TimeoutExpired("2 of 4 chunks unfinished")),
     FailureClass.TIMEOUT, False, False),
    ("an operator's cancel", lambda tmp: (_ for _ in ()).throw(Cancelled("cancelled while running")),
     FailureClass.CANCELLED, False, False),
]


@pytest.mark.parametrize("name,make,fclass,retries,fails_over", FAULTS, ids=[f[0] for f in FAULTS])
def test_fault_class_and_next_step(tmp_path, name, make, fclass, retries, fails_over):
    exc = _raised(lambda: make(tmp_path))
    assert classify(exc) is fclass, f"{name}: {type(exc).__name__}: {exc}"
    step = next_step(fclass, user_failures=1, retries=2, providers_left=1)
    assert (step is Step.RETRY_SAME) == retries
    assert (step is Step.FAIL_OVER) == fails_over


def test_a_repeated_user_code_failure_is_not_retried_again():
    assert next_step(FailureClass.USER_CODE, user_failures=1, retries=3, providers_left=1) is Step.RETRY_SAME
    assert next_step(FailureClass.USER_CODE, user_failures=2, retries=3, providers_left=1,
                     repeated=True) is Step.GIVE_UP
