"""Dask cluster connectors: ``local`` (owned by the daemon) and ``address`` (existing scheduler)."""
