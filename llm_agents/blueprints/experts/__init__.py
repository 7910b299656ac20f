"""The expert blueprints: `<name>.json` (a blueprint draft) and `<name>.py` (one function per step).

The .py files are read as source by llm_agents.blueprints.library and, like any step
code, run only inside the sandbox.
"""
