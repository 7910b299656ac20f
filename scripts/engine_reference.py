"""Write (or check) the edge engine's reference answers on the shipped lab captures.

    .venv/bin/python scripts/engine_reference.py write tests/data/engine_reference.json.gz
    .venv/bin/python scripts/engine_reference.py check tests/data/engine_reference.json.gz

For each capture in data/lab (eval, heldout, spoofed_flood): every window the engine scores
(`streams.score.score_frame`, the code behind `edgeloop score` and the stream) with its view,
flows, close reason, verdict and confidence, and a digest of its features (windows_from_frame,
the training path: the sum and the sum of squares of its 54 x n values). The reference was
first written by the engine before the columnar rebuild (commit 4e695a1), which the rebuilt
engine matched; it was written again when the default bundle changed (54c10b09, feature
schema 4), after checking that every window, its flows, view and close reason were still
identical (only verdicts, confidences and feature digests moved, as a new model and a new
feature must), and again for the default bundle 770d01ca (slow-DoS variants in the recipe:
windows, flows, views, close reasons and feature digests all identical; verdicts and
confidences moved), and for 7ef2386b (the same network with the flow-support gate: three
windows, each holding a 470 KB DNS-reflection flow, went to uncertain; nothing else moved),
and for the destination-view rule (contracts.window.SOURCE_ONLY_CLASSES: 242 destination
windows of the evaluation capture and 242 of the held-out one, each called a host sweep,
went to uncertain; nothing else moved), and for the default bundle a546cb0c (the idle-cut
slowloris capture in the recipe: windows, flows, views, close reasons and feature digests all
identical; verdicts and confidences moved), and for the one-peer destination rule
(contracts.window.ONE_PEER_SOURCE_CLASSES: 454 windows of the evaluation capture and 385 of
the held-out one went to uncertain; nothing else moved, the spoofed flood not at all), and
for the flood-shape rule (contracts.window.FLOOD_SHAPE_SPAN_MS, rule 19: 5 destination windows
of the evaluation capture, each 8 one-packet IPv6 neighbour-discovery flows from 8 hosts at the
lab's start, called benign, went to uncertain; nothing else moved), and for the repeat-shape
rule (contracts.window.REPEAT_SHAPE_*, rule 20: source windows called benign went to
uncertain, 5 of the evaluation capture, MQTT publishers and one HTTP client, and 10 of the
held-out one, 8 benign pollers, an SSH brute force and a slow HTTP DoS the network missed;
nothing else moved, the spoofed flood not at all).
Since 2026-12-07 (eleventh session) it also holds what the engine sends besides detections
(`outputs`: every uncertain message and alert, in order), written by the engine before the
per-window path went onto columns (as at commit daa9d9c), which the columnar one matched exactly.
Written again 2026-12-08 for the default bundle af197e62 with the one-service rule on (rule 27):
windows, flows, views, close reasons and feature digests all identical; the predicted class
moved on 222, 612 and 22,000 windows (the spoofed flood's one-flow source windows, deferred
before and after: benign at 0.40 -> syn_scan at 0.54), the `uncertain` flag on 279, 253 and 6;
uncertain messages 967 -> 815, 1,466 -> 1,484 and 22,160 -> 22,166. The outputs are now the
engine's with the default shape rules, as a worker runs.
tests/unit/test_engine_reference.py holds today's engine to those answers.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CAPTURES = ("eval", "heldout", "spoofed_flood")


def answers(capture: str) -> dict:
    import numpy as np
    import pandas as pd

    from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle
    from inference.windowing import windows_from_frame
    from streams.score import score_frame

    bundle = Bundle.load(DEFAULT_BUNDLE_DIR)
    df = pd.read_parquet(REPO / "data" / "lab" / f"{capture}.parquet")
    scored = score_frame(df, bundle).windows
    spec = bundle.meta.window
    feats = {w.window_id: w.features.astype(np.float64)
             for w in windows_from_frame(df, k=spec.k, seconds=spec.seconds, views=spec.views)}
    out = {}
    for r in scored.itertuples():
        f = feats[r.window_id]
        out[r.window_id] = {
            "view": r.view, "flows": hashlib.blake2b("|".join(r.flow_ids).encode(), digest_size=8).hexdigest(),
            "n": len(r.flow_ids), "closed_by": r.closed_by, "predicted": r.predicted,
            "uncertain": bool(r.uncertain), "confidence": round(float(r.confidence), 4),
            "fsum": round(float(f.sum()), 3), "fsq": round(float((f * f).sum()), 3)}
    return out


def outputs(capture: str) -> dict:
    """What the engine sends besides detections, driven as a worker drives it (pushes of 500
    records, a tick after each, a clock half a second on per push): every `uncertain` message
    (window id, reason; each uncertain window, rate limit off, and a 5% audit sample) and
    every alert (its id, key, view, attack, windows, flows, sources, listed addresses and
    ports, times), in the order they went out."""
    import json as _json

    import pandas as pd

    from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle
    from streams.detector import DetectorConfig, EdgeDetector
    from inference.onnx_detector import OnnxDetector
    from streams.sources.files import records_from_frame

    bundle = Bundle.load(DEFAULT_BUNDLE_DIR)
    records, _ = records_from_frame(pd.read_parquet(REPO / "data" / "lab" / f"{capture}.parquet"))
    now = [1000.0]
    eng = EdgeDetector(OnnxDetector(bundle),  # the default shape rules, as a worker runs
                       DetectorConfig(uncertain_rate_per_s=0, audit_sample=0.05), clock=lambda: now[0])
    sent = []
    for i in range(0, len(records), 500):
        eng.ingest(records[i:i + 500])
        now[0] += 0.5
        sent += eng.tick(now=True)
    sent += eng.flush_all()
    uncertain, alerts = [], []
    for o in sent:
        v = _json.loads(o.value)
        if o.topic == "uncertain":
            uncertain.append([v["window_id"], v["reason"]])
        elif o.topic == "alerts":
            alerts.append({k: v[k] for k in ("alert_id", "key", "view", "attack", "windows", "flows", "sources",
                                             "src_ips", "dst_ips", "dst_ports", "first_seen_ms", "last_seen_ms")})
    return {"uncertain": uncertain, "alerts": alerts}


EXACT = ("view", "flows", "n", "closed_by", "predicted", "uncertain")
# Host history is now a vectorised scan: float rounding moves the digests in the last place.
TOLERANCE = {"confidence": 2e-4, "fsum": 5e-3, "fsq": 5e-3}


def differences(want: dict, got: dict) -> list[str]:
    """What differs between two captures' answers: windows missing or new, any exact field,
    or a number beyond its tolerance."""
    out = [f"window {w} missing" for w in sorted(set(want) - set(got))]
    out += [f"window {w} new" for w in sorted(set(got) - set(want))]
    for wid in sorted(set(want) & set(got)):
        a, b = want[wid], got[wid]
        out += [f"{wid} {f}: {a[f]!r} -> {b[f]!r}" for f in EXACT if a[f] != b[f]]
        out += [f"{wid} {f}: {a[f]} -> {b[f]}" for f, tol in TOLERANCE.items()
                if abs(a[f] - b[f]) > tol * max(1.0, abs(a[f]))]
    return out


def output_differences(want: dict, got: dict) -> list[str]:
    """Where two runs' uncertain messages or alerts differ, in order (exactly)."""
    out = []
    for topic in ("uncertain", "alerts"):
        a, b = want[topic], got[topic]
        if len(a) != len(b):
            out.append(f"{topic}: {len(a)} -> {len(b)} messages")
        out += [f"{topic} #{i}: {x} -> {y}" for i, (x, y) in enumerate(zip(a, b)) if x != y]
    return out


def main() -> None:
    sys.path.insert(0, str(REPO))
    mode, path = sys.argv[1], Path(sys.argv[2])
    got = {c: answers(c) for c in CAPTURES}
    got.update({f"{c}:outputs": outputs(c) for c in CAPTURES})
    if mode == "write":
        path.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(path, "wt") as fh:
            json.dump(got, fh, sort_keys=True)
        print(f"wrote {path}: " + ", ".join(f"{c} {len(got[c])} windows" for c in CAPTURES))
    else:
        with gzip.open(path, "rt") as fh:
            want = json.load(fh)
        bad = {c: differences(want[c], got[c]) for c in CAPTURES}
        bad.update({f"{c}:outputs": output_differences(want[f"{c}:outputs"], got[f"{c}:outputs"]) for c in CAPTURES})
        for c, d in bad.items():
            what = (f"{len(got[c]['uncertain'])} uncertain messages, {len(got[c]['alerts'])} alerts"
                    if c.endswith(":outputs") else f"{len(got[c])} windows")
            print(f"{c}: {what}, {len(d)} differences", *d[:10], sep="\n  ")
        sys.exit(1 if any(bad.values()) else 0)


if __name__ == "__main__":
    main()
