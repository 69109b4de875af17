"""Stand-in for PyPI's ``adapters``: installed by tests/integration/test_namespace.py."""

STANDIN = "adapters"
