"""Moved to `contracts.errors`. This name stays only until the traffic lab's imports are
rewritten; new code imports `contracts.errors` (tests/unit/test_import_direction.py
refuses this module anywhere but the lab)."""
from contracts.errors import *  # noqa: F401,F403
