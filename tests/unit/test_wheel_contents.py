"""What the wheels carry. The full wheel holds no test scaffolding; the edge wheel, staged
the way Dockerfile.edge and deploy/systemd/install.sh stage it (scripts/stage-edge.sh),
holds none of the core either: no LLM agent, no traffic lab, no experiments.

Both wheels are built here, offline, with the venv's setuptools (about a second each),
from copies of the tree in a temporary directory, so no build/ is left in the checkout.
"""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STAGE = REPO / "scripts" / "stage-edge.sh"
DEPLOY = REPO / "deploy"
# What tests import from tests/support: scripted_server, scripted_windows, testing, tls, ...
SCAFFOLDING = {p.stem for p in (REPO / "tests" / "support").glob("*.py")}
CORE_ONLY = ("llm_agents", "trafficlab", "evaluation", "tests")


def edge_packages() -> list[str]:
    p = subprocess.run(["bash", str(STAGE), "--list"], capture_output=True, text=True, check=True)
    return p.stdout.split()


def build_wheel(tree: Path, out: Path) -> zipfile.ZipFile:
    """Build a wheel from `tree` without the network."""
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "--no-index", "-w", str(out), str(tree)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    [wheel] = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


def top_level(names: list[str]) -> set[str]:
    return {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}


def scaffolding(names: list[str]) -> list[str]:
    return [n for n in names if n.endswith(".py") and Path(n).stem in SCAFFOLDING]


def experiments(names: list[str]) -> list[str]:
    return [n for n in names if re.search(r"(^|/)experiment[^/]*\.py$", n)]


def import_time_imports(node: ast.AST) -> list[str]:
    """Absolute imports that run when the module loads: not inside a function, and not
    under `if TYPE_CHECKING:`."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        return []
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
        return [m for child in node.orelse for m in import_time_imports(child)]
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        return [] if node.level else [node.module or ""]
    return [m for child in ast.iter_child_nodes(node) for m in import_time_imports(child)]


@pytest.fixture(scope="module")
def full_wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel `pip install .` builds from a checkout: every top-level package, with
    tests/ beside them as in the repository."""
    tree = tmp_path_factory.mktemp("full")
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "_history_kernel.c")
    for d in REPO.iterdir():
        if d.is_dir() and (d / "__init__.py").exists():
            shutil.copytree(d, tree / d.name, ignore=skip)
    shutil.copytree(REPO / "tests" / "support", tree / "tests" / "support", ignore=skip)
    for f in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / f, tree / f)
    return build_wheel(tree, tmp_path_factory.mktemp("full-wheel"))


@pytest.fixture(scope="module")
def edge_wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    tree = tmp_path_factory.mktemp("edge") / "src"
    subprocess.run(["bash", str(STAGE), str(tree), str(REPO)], check=True)
    return build_wheel(tree, tmp_path_factory.mktemp("edge-wheel"))


def test_the_full_wheel_has_the_core_and_no_test_scaffolding(full_wheel):
    names = full_wheel.namelist()
    assert {"llm_agents", "trafficlab", *edge_packages()} <= top_level(names)
    assert scaffolding(names) == []
    assert "tests" not in top_level(names)


def test_the_edge_wheel_has_only_the_edge_packages(edge_wheel):
    names = edge_wheel.namelist()
    assert top_level(names) & set(CORE_ONLY) == set()
    assert top_level(names) == set(edge_packages())
    assert scaffolding(names) == []
    assert experiments(names) == []
    # host history's kernel, compiled from the staged .pyx (stage-edge.sh leaves a checkout's .so out)
    assert [n for n in names if n.startswith("inference/_history_kernel")
            and n.endswith(".so")], "the edge wheel lacks the compiled host-history kernel"


def test_the_edge_command_line_imports_only_what_the_edge_wheel_holds(edge_wheel):
    """The `edgeloop` entry point lies in the edge wheel, and no module there imports the
    core's packages at module level: a command that needs them imports them when it runs
    (and the command line names the install it needs)."""
    names = edge_wheel.namelist()
    [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    target = re.search(r"^edgeloop = ([\w.]+):", edge_wheel.read(entry_points).decode(), re.M).group(1)
    assert f"{target.replace('.', '/')}.py" in names
    bad = [f"{name}: {mod}" for name in names if name.endswith(".py")
           for mod in import_time_imports(ast.parse(edge_wheel.read(name))) if mod.split(".")[0] in CORE_ONLY]
    assert bad == [], "imports, when the module loads, of packages an edge install does not have"


def edge_cli(unpacked: Path, *args: str) -> subprocess.CompletedProcess:
    """`edgeloop ARGS` from the unpacked edge wheel alone: -S keeps this checkout's editable
    install (a .pth file) out, so only the venv's third-party packages are added."""
    code = (f"import sys; sys.path[:0] = [{str(unpacked)!r}, {sysconfig.get_paths()['purelib']!r}]\n"
            "from edgeloop_app.cli import main; main()")
    return subprocess.run([sys.executable, "-S", "-c", code, *args], capture_output=True, text=True,
                          cwd=unpacked, timeout=60)


def test_an_edge_install_runs_its_commands_and_names_the_install_a_core_command_needs(edge_wheel, tmp_path):
    edge_wheel.extractall(tmp_path)
    top = edge_cli(tmp_path, "--help")
    assert top.returncode == 0, top.stderr
    listed = set(re.findall(r"^  (\S+)", top.stdout.split("Commands:")[1], re.M))
    assert {"detect", "capture", "enforce", "status"} <= listed
    assert not listed & {"lab", "agent", "review", "retrain", "policy", "run"}
    for args, part in ((["lab", "--help"], "trafficlab"), (["agent"], "llm_agents"), (["run"], "llm_agents"),
                       (["experiment", "open-world"], "evaluation")):
        p = edge_cli(tmp_path, *args)
        assert p.returncode == 2 and f"needs {part}, which this install does not have" in p.stderr, (args, p.stderr)
    assert "scripts/setup-lab.sh" in edge_cli(tmp_path, "lab").stderr


def test_the_deploy_files_stage_the_edge_through_the_same_script():
    """Dockerfile.edge and install.sh build from what stage-edge.sh stages, and the edge
    image's build context lets in exactly what that script copies."""
    docker = (DEPLOY / "docker" / "Dockerfile.edge").read_text()
    assert re.search(r"^RUN bash \S*scripts/stage-edge\.sh /src ", docker, re.M)
    assert re.search(r"^WORKDIR /src$", docker, re.M) and "pip install ." in docker
    allowed = {line[1:].rstrip("/") for line in (DEPLOY / "docker" / "Dockerfile.edge.dockerignore")
               .read_text().splitlines() if line.startswith("!")}
    assert allowed == {"pyproject.toml", "setup.py", "README.md", "scripts/stage-edge.sh", *edge_packages()}
    install = (DEPLOY / "systemd" / "install.sh").read_text()
    assert re.search(r'if ! has_role agent .*\n(.*\n){0,3}\s*bash "\$REPO/scripts/stage-edge\.sh" "\$src" "\$SOURCE"',
                     install), "install.sh must stage the edge for roles without the agent"


def test_staging_refuses_a_tree_that_is_not_empty(tmp_path):
    (tmp_path / "llm_agents").mkdir()
    p = subprocess.run(["bash", str(STAGE), str(tmp_path), str(REPO)], capture_output=True, text=True)
    assert p.returncode == 1 and "not empty" in p.stderr
