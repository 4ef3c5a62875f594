"""Shared test configuration: hypothesis profiles (CI runs the default, bounded one)."""

from hypothesis import settings

settings.register_profile("default", deadline=None, max_examples=100)
settings.load_profile("default")
