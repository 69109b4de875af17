"""Deprecated: the pre-0.2 import name of skyfeast's Feast engine plugin.

Installed as the top-level package ``featurestore`` for one release, so that a
``feature_store.yaml`` naming ``featurestore.engine.DaskComputeEngine`` keeps
working; it warns.  Use ``skyfeast.featurestore.engine.DaskComputeEngine``.
Nothing else is re-exported here.
"""
