"""The shipped detector on the lab's spoofed-source SYN flood: an alert that names the victim.

data/lab/spoofed_flood.parquet is one real hping3 --rand-source run in the lab (22,000
sources, the held-out variant: ports and rates training never used). Every source window
is one SYN from a fresh address and says nothing; the destination view must.
"""
from __future__ import annotations

import json

import pytest

from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle
from inference.datasets.lab import LAB_DIR
from inference.onnx_detector import OnnxDetector
from streams.detector import DetectorConfig, EdgeDetector
from streams.sources.files import records_from_frame

FLOOD = LAB_DIR / "spoofed_flood.parquet"


@pytest.mark.skipif(not FLOOD.is_file(), reason="no spoofed-flood capture shipped")
def test_the_destination_view_alerts_on_the_victim_of_a_spoofed_flood():
    import pandas as pd

    flows = pd.read_parquet(FLOOD)
    victim = json.loads(FLOOD.with_name("spoofed_flood.labels.json").read_text())["spans"][0]["victim_ip"]
    attack = flows[flows["label"] == "syn_flood"]
    assert attack["src_ip"].nunique() >= 20_000 and set(attack["dst_ip"]) == {victim}
    eng = EdgeDetector(OnnxDetector(Bundle.load(DEFAULT_BUNDLE_DIR)), DetectorConfig(uncertain_rate_per_s=0),
                       clock=lambda: 0.0)
    records, _ = records_from_frame(flows.drop(columns=["label"]))
    eng.ingest(records)
    alerts = [json.loads(o.value) for o in eng.flush_all() if o.topic == "alerts"]
    on_victim = [a for a in alerts if a["view"] == "dst" and a["key"] == victim and a["attack"] == "syn_flood"]
    assert on_victim, [(a["view"], a["key"], a["attack"]) for a in alerts][:10]
    a = on_victim[0]
    assert a["sources"] >= 10_000 and a["windows"] >= 100
    # No source of the flood is accused: each sent one SYN.
    assert not [x for x in alerts if x["view"] == "src" and x["key"] in set(attack["src_ip"])]
