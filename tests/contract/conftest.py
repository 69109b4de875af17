"""The object-store contract suite uses the session emulators defined in tests/conftest.py."""
