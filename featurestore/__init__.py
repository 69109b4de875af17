"""Everything that touches Feast: repo access, online writes, registry bookkeeping."""

import skyfeast.adapters  # noqa: F401,E402  (gRPC's fork support off before a cloud SDK loads: see that package)
from skyfeast.featurestore import _typechecks  # noqa: F401  (before Feast is imported: see that module)
