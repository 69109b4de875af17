"""skyfeast's daemon core: config, ledger, triggers, policy, execution and CLI."""

import skyfeast.featurestore._typechecks  # noqa: F401  (before anything imports Feast: see that module)

__version__ = "0.1.0"
