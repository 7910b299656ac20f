"""`make run`'s live table (edgeloop_app.demo.LiveView): what it says went to the agent."""
from __future__ import annotations


def test_make_runs_live_table_never_shows_a_negative_count_to_the_agent():
    """`make run`'s table reads covered windows from the detector's metric, which counts them
    before their detections reach the table: the count sent to the agent must not go below 0."""
    from rich.console import Console

    from edgeloop_app.demo import LiveView
    from streams.topics import Topics

    view = LiveView(Topics())
    view.uncertain, view.covered = 3, 5
    view.gates = {"low_confidence": 2, "destination": 5, "flood_shape": 1, "member": 0}
    con = Console(width=120, record=True)
    con.print(view.table(10, 9400, 1.0))
    rows = {ln.split("│")[1].strip(): ln.split("│")[2].strip() for ln in con.export_text().splitlines()
            if ln.count("│") >= 3}
    assert rows["uncertain (to the agent)"] == "0"
    assert rows["uncertain, covered by their sources' windows"] == "5"
    assert rows["deferred by"] == "destination 5, low_confidence 2, flood_shape 1"
