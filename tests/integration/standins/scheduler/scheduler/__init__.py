"""Stand-in for PyPI's ``scheduler``: installed by tests/integration/test_namespace.py."""

STANDIN = "scheduler"
