"""What the blueprint sandbox costs: start-up and one step, against a bare interpreter.

    .venv/bin/python tests/bench/bench_sandbox.py [--repeat 7] [--flows 100000]

Alternated, best of N, in one run:
- bare      `python -I -S -B` running the same step source on the same view, no isolation
            (the raw baseline: interpreter start, numpy import, np.load, the step);
- sandbox   Sandbox.run: bubblewrap, the minimal root, both seccomp filters, uid 65534,
            rlimits, restricted builtins, and the run's own cgroup where one can be made;
- no cgroup the same without the cgroup (rlimits only), to show what the cgroup costs.
Two steps: an empty one (start-up alone) and a numpy pass over a twin view of --flows flows
(count flows per source, the kind of work a blueprint step does). Also the one-off cost of
building the minimal root into an empty cache.

For the record, the hand-made namespaces this replaced (commit fc7ec7f) took 226 ms for the
empty step and 224 ms for the count on this machine; the bubblewrap sandbox 224 and 223 ms.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from llm_agents.blueprints import sandbox_root
from llm_agents.blueprints.sandbox import Sandbox, SandboxLimits, StepSource

EMPTY = "def f():\n    return {'y': 1}\n"
COUNT = ("import numpy as np\n"
         "def f(flows):\n"
         "    keys, counts = np.unique(flows['src_ip'], return_counts=True)\n"
         "    top = np.argsort(counts)[-5:]\n"
         "    return {'y': [[str(keys[i]), int(counts[i])] for i in top]}\n")
BARE = ("import sys\nsys.path.append({site!r})\nimport numpy as np\n{src}\n"
        "with np.load({view!r}, allow_pickle=False) as z:\n    flows = {{k: z[k] for k in z.files}}\n"
        "args = {{'flows': flows}} if 'flows' in f.__code__.co_varnames else {{}}\nprint(f(**args)['y'])\n")


def make_view(path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    src = np.char.add("10.1.", rng.integers(0, 250, n).astype(str))
    np.savez(path, src_ip=src, packets=rng.integers(1, 50, n), w_key=src[::8])


def bare(src: str, view: Path) -> float:
    t0 = time.perf_counter()
    code = BARE.format(site=str(sandbox_root.numpy_site()), src=src, view=str(view))
    subprocess.run([sys.executable, "-I", "-S", "-B", "-c", code], check=True, capture_output=True)
    return time.perf_counter() - t0


def sandboxed(sb: Sandbox, src: str, view: Path, cgroup: bool = True) -> tuple[float, float, str]:
    from llm_agents.blueprints import sandbox as module
    from llm_agents.blueprints.cgroups import RunCgroup

    make = module.RunCgroup.create
    if not cgroup:
        module.RunCgroup.create = lambda *a, **k: RunCgroup(why_not="off for the bench")  # type: ignore[method-assign]
    try:
        t0 = time.perf_counter()
        inputs = ["flows"] if "flows" in src else []
        res = sb.run([StepSource("f", src, inputs, ["y"])], view=view, final=("y",))
    finally:
        module.RunCgroup.create = make  # type: ignore[method-assign]
    assert res.ok, res.problem()
    return time.perf_counter() - t0, res.isolation["confine_s"], res.isolation["cgroup"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=7, help="alternated runs of each (best is printed)")
    ap.add_argument("--flows", type=int, default=100_000, help="flows in the twin view the step reads")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        view = Path(tmp) / "view.npz"
        make_view(view, args.flows)
        cache = Path(tmp) / "cache"
        t0 = time.perf_counter()
        sandbox_root.ensure_root(sys.executable, cache)
        build = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
        sb = Sandbox(SandboxLimits(wall_s=30), root_cache=cache)
        print(f"minimal root: built in {build:.2f} s, {size / 1e6:.0f} MB (once per interpreter, numpy and runner)")
        print(f"{'step':<22}{'bare ms':>10}{'sandbox ms':>12}{'ratio':>8}{'no cgroup ms':>14}{'confine ms':>12}")
        cgroup = ""
        for name, src in (("empty (start-up)", EMPTY), (f"count {args.flows:,} flows", COUNT)):
            b, s, n, c = [], [], [], []
            for i in range(args.repeat):
                b.append(bare(src, view))
                # Whichever sandbox run follows the bare one pays for what that evicted:
                # alternate which goes first.
                for with_cgroup in ((True, False) if i % 2 else (False, True)):
                    took, confine, how = sandboxed(sb, src, view, cgroup=with_cgroup)
                    if with_cgroup:
                        s.append(took)
                        c.append(confine)
                        cgroup = how
                    else:
                        n.append(took)
            print(f"{name:<22}{min(b) * 1e3:>10.0f}{min(s) * 1e3:>12.0f}{min(s) / min(b):>7.2f}x"
                  f"{min(n) * 1e3:>14.0f}{min(c) * 1e3:>12.0f}")
        print(f"cgroup of a run: {cgroup.split(':')[0]}")


if __name__ == "__main__":
    main()
