"""Everything that touches Feast: repo access, online writes, registry bookkeeping."""

from skyfeast.featurestore import _typechecks  # noqa: F401  (before Feast is imported: see that module)
