"""Imports point one way: down the layers, never up.

    edgeloop_app   the `edgeloop` CLI front and `edgeloop run`: may import anything
    trafficlab     the traffic lab
    llm_agents     the core: the agent, retraining, policies
    evaluation     the promotion gate, the site baseline, open-world evaluation
    streams        the edge: Kafka, windows to detections, enforcement
    inference      features, windowing, the model, training
    contracts      records, errors, the policy model, the window spec: imports nothing of ours

Every import counts, at module level or inside a function (a lazy import is still a
dependency), and so does a module path written as a string ("pkg.mod" or "pkg.mod:attr")
that names one of our modules: the lazy `_EXPORTS` of the packages and the CLI's lazy
subcommands. The CLI is the top layer, so its strings can only point down.

The edge install (contracts, inference, streams and the CLI front) must also run without
the agent, the evaluation tools and the lab: the CLI reaches those only by name, when a
command that needs them is invoked.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAYERS = ("contracts", "inference", "streams", "evaluation", "llm_agents", "trafficlab", "edgeloop_app")
RANK = {name: i for i, name in enumerate(LAYERS)}
EDGE = ("contracts", "inference", "streams")
EDGE_APP = ("edgeloop_app.cli",)
NOT_ON_EDGE = ("evaluation", "llm_agents", "trafficlab")
# Modules that moved: their old names exist nowhere, so product code may not use them.
MOVED = {"streams.errors": "contracts.errors", "streams.records": "contracts.records",
         "streams.sources.pcap": "inference.flow_meter",
         **{f"llm_agents.{old}": f"llm_agents.{new}" for old, new in (
             ("labeler", "labeling.labeler"), ("acceptance", "labeling.acceptance"),
             ("decider", "labeling.decider"), ("review", "labeling.review"),
             ("synthesizer", "synthesis.synthesizer"), ("synthesis_prompt", "synthesis.prompt"),
             ("fidelity", "synthesis.fidelity"), ("baselines", "synthesis.baselines"),
             ("constraints", "synthesis.constraints"), ("sklearn_eval", "synthesis.sklearn_eval"),
             ("twin_kpis", "twin.kpis"), ("policy_store", "policies.store"), ("policy_cli", "policies.cli"),
             ("alert_proposer", "policies.alert_proposer"), ("experiment_augment", "experiments.augment"),
             ("experiment_policies", "experiments.policies"), ("experiment_cli", "experiments.cli"),
             ("experiment_baseline", "experiments.baseline"), ("twin_scenarios", "experiments.twin_scenarios"))}}
# Inside the core, the stages (llm_agents' subpackages; "core" for its top-level modules)
# a stage must not import: the twin is a leaf, blueprints are scored on the twin and
# policies are built from blueprints, and nothing but the CLI reaches the experiments.
STAGE_MUST_NOT_IMPORT = {
    "twin": {"labeling", "synthesis", "blueprints", "policies", "experiments"},
    "blueprints": {"labeling", "synthesis", "policies", "experiments"},
    "labeling": {"synthesis", "blueprints", "twin", "policies", "experiments"},
    "synthesis": {"labeling", "blueprints", "twin", "policies", "experiments"},
    "policies": {"labeling", "synthesis", "experiments"},
    "prompts": {"labeling", "synthesis", "blueprints", "twin", "policies", "experiments"},
    "experiments": set(),
    "core": {"experiments"},
}
_MODULE_STRING = re.compile(r"^(%s)(\.\w+)+(:\w+)?$" % "|".join(LAYERS))


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    where: str  # file:line
    by_name: bool  # a module path in a string, resolved by importlib

    def __str__(self) -> str:
        how = " (by name)" if self.by_name else ""
        return (f"{self.where}: {self.importer} [{layer(self.importer)}] -> "
                f"{self.imported} [{layer(self.imported)}]{how}")


def layer(module: str) -> str:
    return module.split(".")[0]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_files() -> list[Path]:
    return sorted(p for pkg in LAYERS if (REPO / pkg).is_dir()
                  for p in (REPO / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def ours(module: str) -> str | None:
    """The longest prefix of `module` that is one of our modules (a name imported from a
    module, `from pkg.mod import name`, resolves to the module)."""
    parts = module.split(".")
    if parts[0] not in RANK:
        return None
    for n in range(len(parts), 0, -1):
        base = REPO.joinpath(*parts[:n])
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return ".".join(parts[:n])
    return None


def edges_of(path: Path) -> list[Edge]:
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    rel = path.relative_to(REPO)
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        by_name = False
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_STRING.match(node.value):
            targets, by_name = [node.value.split(":")[0]], True
        for target in targets:
            found = ours(target)
            if found and found != me:
                out.append(Edge(me, found, f"{rel}:{node.lineno}", by_name))
    return out


def all_edges() -> list[Edge]:
    return [e for path in product_files() for e in edges_of(path)]


def test_every_top_level_package_has_a_layer():
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests", "scripts"}
    assert packages <= set(LAYERS), f"place {sorted(packages - set(LAYERS))} in LAYERS"


def test_no_import_points_up_a_layer():
    back = [str(e) for e in all_edges() if RANK[layer(e.imported)] > RANK[layer(e.importer)]]
    assert not back, "imports against the layering (importer -> imported):\n" + "\n".join(back)


def test_contracts_import_nothing_of_ours():
    inside = [str(e) for e in all_edges() if layer(e.importer) == "contracts" and layer(e.imported) != "contracts"]
    assert not inside, "\n".join(inside)


def test_the_edge_install_reaches_nothing_of_the_core():
    """Follow every import statement (strings aside: the CLI's lazy subcommands) from the
    edge packages and the CLI front; none may land in the agent, evaluation or the lab."""
    by_importer: dict[str, list[Edge]] = {}
    for e in all_edges():
        if not e.by_name:
            by_importer.setdefault(e.importer, []).append(e)
    start = [module_name(p) for p in product_files() if layer(module_name(p)) in EDGE] + list(EDGE_APP)
    seen, todo, bad = set(start), list(start), []
    while todo:
        for e in by_importer.get(todo.pop(), []):
            if layer(e.imported) in NOT_ON_EDGE:
                bad.append(str(e))
            elif e.imported not in seen:
                seen.add(e.imported)
                todo.append(e.imported)
    assert not bad, "the edge install would import:\n" + "\n".join(bad)


def test_edge_modules_run_with_the_core_absent():
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in NOT_ON_EDGE)
    code = (f"import sys; {blocked}\n"
            "import contracts.records, contracts.policy_model, inference.onnx_detector, inference.windowing\n"
            "import streams.worker, streams.score, streams.enforce, edgeloop_app.cli")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_product_code_uses_the_new_names_of_moved_modules():
    """The old modules are gone, so an import of them would only fail at run time (a lazy
    one, late): refuse the names themselves, read from the source of the product and the
    tests."""
    old = []
    for path in product_files() + sorted((REPO / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            old += [f"{path.relative_to(REPO)}:{node.lineno}: {n} -> {MOVED[k]}" for n in names
                    for k in MOVED if n == k or n.startswith(k + ".")]
    assert not old, "\n".join(old)


def stage(module: str) -> str | None:
    """The core stage of a module of llm_agents: its subpackage, or "core"."""
    parts = module.split(".")
    if parts[0] != "llm_agents":
        return None
    return parts[1] if len(parts) > 1 and (REPO / "llm_agents" / parts[1] / "__init__.py").is_file() else "core"


def test_core_stages_point_one_way():
    """The package surface (llm_agents/__init__.py) may name any stage: it imports by name,
    on first use. Everything else keeps to STAGE_MUST_NOT_IMPORT."""
    stages = {p.parent.name for p in (REPO / "llm_agents").glob("*/__init__.py")}
    assert stages <= set(STAGE_MUST_NOT_IMPORT) - {"core"}, f"give {sorted(stages - set(STAGE_MUST_NOT_IMPORT))} rules"
    bad = [f"{e} ({stage(e.importer)} -> {stage(e.imported)})" for e in all_edges()
           if e.importer != "llm_agents" and stage(e.importer) and stage(e.imported)
           and stage(e.imported) in STAGE_MUST_NOT_IMPORT[stage(e.importer)]]
    assert not bad, "imports between the core's stages against their direction:\n" + "\n".join(bad)


def test_every_package_surface_name_resolves():
    """Each name a package's lazy surface offers imports and exists: a module moved or a name
    renamed would otherwise fail only when someone first touches it."""
    code = ("import importlib, pathlib\n"
            "bad = []\n"
            "for init in sorted(pathlib.Path('.').glob('*/**/__init__.py')):\n"
            "    name = '.'.join(init.parent.parts)\n"
            "    if name.split('.')[0] not in %r or 'EXPORTS' not in init.read_text():\n"
            "        continue\n"
            "    pkg = importlib.import_module(name)\n"
            "    for n in pkg.__all__:\n"
            "        try:\n"
            "            getattr(pkg, n)\n"
            "        except Exception as exc:\n"
            "            bad.append(f'{name}.{n}: {exc!r}')\n"
            "assert not bad, bad\n"
            "print(len(bad))\n") % (LAYERS,)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
