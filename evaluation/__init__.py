"""Judging a model bundle by running the edge's own engine over captures: the promotion
gate (`gate`), the site baseline (`baseline`) and the open-world evaluation (`openworld`,
`experiment_openworld`).

These score with `streams.detector.EdgeDetector` (through `streams.score`) so a verdict
here is the verdict the edge would give, which puts them above `streams` and below the
agent (`llm_agents.retrain` promotes through the gate). Edge installs never import them.
"""
