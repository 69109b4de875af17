"""The app: how one process is wired (:mod:`.runtime`) and the scheduling loop (:mod:`.daemon`)."""

from skyfeast.scheduler.app.runtime import Runtime, build_daemon, engine_providers, open_runtime

__all__ = ["Runtime", "build_daemon", "engine_providers", "open_runtime"]
