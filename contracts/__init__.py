"""What every part of edgeloop agrees on, and nothing else: the records on the topics
(`records`), the error tree (`errors`), the policy model (`policy_model`) and the window
spec (`window`).

This package is the leaf of the import graph: it imports the standard library and
third-party packages (pydantic, msgspec, numpy), never `inference`, `streams` or
`llm_agents`, so the edge and the core can share it without pulling each other in
(tests/unit/test_import_direction.py checks it).
"""
