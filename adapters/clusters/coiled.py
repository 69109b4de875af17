"""A named Coiled cluster (extra ``coiled``): reused, and created only when configured to.

Not run against Coiled in this repository's tests (it needs a Coiled
account). The calls follow coiled's API: ``coiled.Cloud.get_cluster_by_name``
raises ``coiled.errors.DoesNotExist`` for an absent cluster, and
``coiled.Cluster(name=...)`` attaches to an existing cluster of that name
(or creates one, which is why the lookup comes first).
"""

from __future__ import annotations

from typing import Any

from skyfeast.adapters.base import AdapterError, NotFound
from skyfeast.adapters.clusters._sdk import SDKConnector, require
from skyfeast.adapters.clusters._tls import translate_comm_error


class CoiledConnector(SDKConnector):
    what = "Coiled cluster"

    def __init__(self, *, cluster_name: str, workspace: str | None = None, create: bool = False,
                 shutdown_on_close: bool = False, options: dict[str, Any] | None = None, name: str = "coiled"):
        super().__init__(name=name)
        self.cluster_name = cluster_name
        self.workspace = workspace
        self.create = create
        self.shutdown_on_close = shutdown_on_close
        self.options = dict(options or {})
        self.owned = shutdown_on_close

    def cluster_kwargs(self) -> dict:
        """Keyword arguments of ``coiled.Cluster``."""
        return {**self.options, "name": self.cluster_name, "workspace": self.workspace,
                "shutdown_on_close": self.shutdown_on_close}

    def _open(self):
        coiled = require("coiled", "coiled")
        if not self.create:
            errors = require("coiled.errors", "coiled")
            try:
                with coiled.Cloud(workspace=self.workspace) as cloud:
                    cloud.get_cluster_by_name(name=self.cluster_name, workspace=self.workspace)
            except errors.DoesNotExist as exc:
                ws = f" in workspace {self.workspace}" if self.workspace else ""
                raise NotFound(f"no Coiled cluster {self.cluster_name!r}{ws} (set `create: true` to let "
                               f"skyfeast create it)") from exc
        return coiled.Cluster(**self.cluster_kwargs())

    def _translate(self, exc: BaseException, what: str) -> AdapterError | None:
        return translate_comm_error(exc, what)
