"""skyfeast's daemon core: config, ledger, triggers, policy, execution and CLI."""

__version__ = "0.1.0"
