"""Moved to `contracts.records`. This name stays only until the traffic lab's and the test
support's imports are rewritten; new code imports `contracts.records`
(tests/unit/test_import_direction.py refuses this module in the product packages)."""
from contracts.records import *  # noqa: F401,F403
