"""pytest-cachevault: a test-result cache for pytest. Unchanged tests are replayed, never wrongly."""

__version__ = "0.1.0"
