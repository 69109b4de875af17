"""The run ledger: runs, attempts, chunks, leases, leadership and cordons (SQLAlchemy 2).

* :mod:`.core` – :class:`Ledger`, the only writer of the tables;
* :mod:`.schema` – the tables and the migrations between schema versions;
* :mod:`.copies` – bookkeeping of offline parts the reconciler still has to copy;
* :mod:`.probes` – each provider's latest health probe;
* :mod:`.actions` – the audit of actions taken through the daemon's HTTP API;
* :mod:`.drills` – failover drills' reports (started, finished, abandoned).
"""

from skyfeast.scheduler.ledger.core import (
    FAILURE_CLASSES,
    LEADER,
    PENDING,
    RUN_STATES,
    SCHEMA_VERSION,
    Fenced,
    Ledger,
    LedgerError,
    RunRow,
    open_ledger,
    reach_ledger,
)

__all__ = ["FAILURE_CLASSES", "LEADER", "PENDING", "RUN_STATES", "SCHEMA_VERSION", "Fenced", "Ledger", "LedgerError",
           "RunRow", "open_ledger", "reach_ledger"]
