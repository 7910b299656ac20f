"""deploy/ checked by the tools made for each format: promtool (config, rules, rule unit
tests), systemd-analyze verify, docker-compose config plus the compose-spec schema,
Kubernetes schemas, BuildKit's Dockerfile parser, ShellCheck.

The tools come from scripts/setup-deploy-tools.sh (Debian packages, and a venv of
validators at .venv/deploy-tools); a test whose tool is missing skips and names it.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from llm_agents.agent_metrics import PolicyStoreCollector, build_agent_metrics
from llm_agents.metrics import build_llm_metrics
from llm_agents.policies.store import PolicyStore
from streams.metrics import EdgeMetrics, EnforcerMetrics, SensorMetrics

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROM = DEPLOY / "prometheus"
TOOLS_VENV = REPO / ".venv" / "deploy-tools" / "bin"


def tool(name: str) -> str:
    """Path of a validator, or skip the test naming what installs it."""
    local = TOOLS_VENV / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed: run scripts/setup-deploy-tools.sh")
    return found


def run(*cmd: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def ok(p: subprocess.CompletedProcess) -> None:
    assert p.returncode == 0, f"{' '.join(p.args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"


# --- Prometheus -------------------------------------------------------------------------

@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-nodes.yml"])
def test_promtool_check_config(config):
    ok(run(tool("promtool"), "check", "config", str(PROM / config)))


def test_promtool_check_config_kubernetes(tmp_path):
    promtool = tool("promtool")
    p = run(promtool, "check", "config", str(PROM / "prometheus-kubernetes.yml"))
    if p.returncode and "field kubernetes_sd_configs not found" in p.stdout + p.stderr:
        # Debian's promtool is built without Kubernetes service discovery (deploy/README.md).
        # Check everything else, the relabelling above all, with the discovery block swapped
        # for a static target.
        text = (PROM / "prometheus-kubernetes.yml").read_text()
        swapped, n = re.subn(r"kubernetes_sd_configs:\n(?:\s+-?\s*\w+:.*\n)+?(?=\s+relabel_configs:)",
                             'static_configs:\n      - targets: ["127.0.0.1:9400"]\n', text)
        assert n == 1
        (tmp_path / "rules").symlink_to(PROM / "rules")
        (tmp_path / "prometheus.yml").write_text(swapped)
        p = run(promtool, "check", "config", str(tmp_path / "prometheus.yml"))
    ok(p)


def test_promtool_check_rules():
    ok(run(tool("promtool"), "check", "rules", str(PROM / "rules" / "edgeloop.rules.yml")))


def test_promtool_rule_unit_tests_pass():
    ok(run(tool("promtool"), "test", "rules", str(PROM / "tests" / "edgeloop.rules.test.yml")))


def test_every_alert_is_shown_firing_by_a_rule_test():
    alerts = re.findall(r"^\s*- alert: (\w+)", (PROM / "rules" / "edgeloop.rules.yml").read_text(), re.M)
    tests = (PROM / "tests" / "edgeloop.rules.test.yml").read_text()
    fired = set()
    for case in re.split(r"\n\s*- eval_time:", tests):
        name = re.search(r"alertname: (\w+)", case)
        if name and "exp_labels" in case:
            fired.add(name.group(1))
    assert len(alerts) >= 5 and set(alerts) <= fired, f"never shown firing: {set(alerts) - fired}"


def _declared(registry: CollectorRegistry) -> set[str]:
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {f.name + s for f in text_string_to_metric_families(generate_latest(registry).decode())
            for s in suffixes.get(f.type, ("",))}


def test_rules_and_dashboard_name_only_metrics_defined_in_code(tmp_path):
    """The fast in-process check; tests/integration/test_prometheus.py repeats it on live processes."""
    defined: set[str] = set()
    # One registry per process kind, as they serve them: detector, agent (with the policy
    # store), sensor, enforcer (whose dead-letter counter repeats the detector's).
    edge, agent, sensor, enforcer = (CollectorRegistry() for _ in range(4))
    EdgeMetrics(edge)
    build_llm_metrics(agent)
    build_agent_metrics(agent)
    agent.register(PolicyStoreCollector(PolicyStore(tmp_path / "policies")))
    SensorMetrics(sensor)
    EnforcerMetrics(enforcer)
    for reg in (edge, agent, sensor, enforcer):
        defined |= _declared(reg)
    name = re.compile(r"\bedgeloop_[a-z0-9_]+")
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "edgeloop.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p.get("targets", []))
    for where, text in {"rules": (PROM / "rules" / "edgeloop.rules.yml").read_text(), "dashboard": exprs}.items():
        used = set(name.findall(text))
        assert used and used <= defined, f"{where}: undefined metrics {used - defined}"


JOBS = {"edgeloop-edge", "edgeloop-agent", "edgeloop-sensor", "edgeloop-enforcer"}


def _jobs(config: str) -> set[str]:
    return set(re.findall(r"^  - job_name: (edgeloop\S*)$", (PROM / config).read_text(), re.M))


def test_scrape_jobs_are_the_ones_the_rules_group_by():
    """Compose has no enforcer (nftables belongs to the hosts); the nodes run all four."""
    assert _jobs("prometheus-nodes.yml") == JOBS
    assert _jobs("prometheus.yml") == JOBS - {"edgeloop-enforcer"}
    kube = (PROM / "prometheus-kubernetes.yml").read_text()
    assert "replacement: edgeloop-$1\n        target_label: job" in kube
    for name in ("edge", "sensor", "agent"):
        manifest = (DEPLOY / "k8s" / f"{name}.yaml").read_text()
        assert f"app.kubernetes.io/component: {name}\n" in manifest


def test_the_port_plan_holds_everywhere():
    """systemd: sensors 9380+i, enforcer 9390, agent 9391, detectors 9400+N; the file_sd
    examples, install.sh and the units agree. Compose: 9400 in every container."""
    env = DEPLOY / "systemd" / "env"
    install = (DEPLOY / "systemd" / "install.sh").read_text()
    assert "EDGELOOP_METRICS_PORT=9390" in (env / "enforce.env").read_text()
    assert "EDGELOOP_METRICS_PORT=9391" in (env / "agent.env").read_text()
    assert "$((9380 + i))" in install and "$((9400 + n))" in install and 'sensor-${IFACE_LIST[i]}.env' in install
    sensor_unit = (DEPLOY / "systemd" / "edgeloop-sensor@.service").read_text()
    files = re.findall(r"^EnvironmentFile=-?(\S+)$", sensor_unit, re.M)
    # Later files override earlier ones: the per-interface port comes last.
    assert files == ["/etc/edgeloop/edgeloop.env", "/etc/edgeloop/kafka.env", "/etc/edgeloop/sensor.env", "/etc/edgeloop/sensor-%i.env"]
    ports = {"sensor": {9380}, "enforcer": {9390}, "agent": {9391}, "edge": {9400, 9401}}
    for name, want in ports.items():
        text = (PROM / "file_sd" / f"{name}.yml").read_text()
        assert {int(p) for p in re.findall(r":(\d+)\"", text)} == want, name
    compose = (DEPLOY / "compose" / "compose.yaml").read_text()
    assert re.search(r'"--metrics-port", "9400", "--hold"\]', compose)
    assert '"sensor:9400"' in (PROM / "prometheus.yml").read_text()
    sensor = (DEPLOY / "k8s" / "sensor.yaml").read_text()
    assert 'prometheus.io/port: "9380"' in sensor and "containerPort: 9380" in sensor
    assert re.search(r'name: EDGELOOP_METRICS_PORT\n\s+value: "9380"', sensor)


# --- Grafana ----------------------------------------------------------------------------

def test_dashboard_is_provisioned_and_well_formed():
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "edgeloop.json").read_text())
    ds = (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    provider = (DEPLOY / "grafana" / "provisioning" / "dashboards" / "edgeloop.yml").read_text()
    compose = (DEPLOY / "compose" / "compose.yaml").read_text()
    uid = re.search(r"uid: (\S+)", ds).group(1)
    assert next(v for v in dash["templating"]["list"] if v["name"] == "datasource")["current"]["value"] == uid
    path = re.search(r"path: (\S+)", provider).group(1)
    assert f"../grafana/dashboards:{path}:ro" in compose and "../grafana/provisioning:/etc/grafana/provisioning:ro" in compose
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    boxes = []
    for p in dash["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "${datasource}" and t["expr"], p["title"]
        for (x, y, w, h, other) in boxes:
            overlap = x < g["x"] + g["w"] and g["x"] < x + w and y < g["y"] + g["h"] and g["y"] < y + h
            assert not overlap, f"panels {other!r} and {p['title']!r} overlap"
        boxes.append((g["x"], g["y"], g["w"], g["h"], p["title"]))
    titles = {p["title"] for p in dash["panels"]}
    for wanted in ("Throughput", "Latency", "Confidence and the uncertain rate", "Dead letters",
                   "Label and retrain loop (agent)", "Retrains and promotions",
                   "Uncertain share by detector", "End to end (flow produced to detection)"):
        assert wanted in titles


# --- systemd ----------------------------------------------------------------------------

def test_systemd_units_verify(tmp_path):
    """The units as install.sh installs them (the venv path rewritten to one that exists)."""
    analyze = tool("systemd-analyze")
    venv = REPO / ".venv"
    if not (venv / "bin" / "edgeloop").exists():
        pytest.skip("no .venv/bin/edgeloop to stand in for the installed one")
    ok(run("bash", str(DEPLOY / "systemd" / "install.sh"), "--render-units", str(tmp_path), "--venv", str(venv)))
    units = sorted(str(p) for p in tmp_path.iterdir())
    assert len(units) == 6
    p = run(analyze, "verify", "--man=no", *units, cwd=tmp_path)
    ok(p)
    assert p.stdout.strip() == "" and p.stderr.strip() == "", p.stdout + p.stderr


def test_systemd_units_differ_from_the_installed_ones_only_in_the_venv_path(tmp_path):
    ok(run("bash", str(DEPLOY / "systemd" / "install.sh"), "--render-units", str(tmp_path), "--venv", "/srv/el"))
    for src in (DEPLOY / "systemd").glob("edgeloop*"):
        text = src.read_text()
        assert (tmp_path / src.name).read_text() == text.replace("/opt/edgeloop/venv", "/srv/el")
        if src.suffix == ".service":
            assert re.search(r"^ExecStart=/opt/edgeloop/venv/bin/edgeloop ", text, re.M), src.name
            if src.name == "edgeloop-sandbox.service":  # reads no settings and, above all, no secrets
                assert "EnvironmentFile" not in text and "PrivateNetwork=yes" in text
            else:
                assert "EnvironmentFile=/etc/edgeloop/edgeloop.env" in text


def test_the_agent_unit_keeps_namespaces_off_and_hands_step_code_to_the_sandbox_unit():
    agent = (DEPLOY / "systemd" / "edgeloop-agent.service").read_text()
    sbx = (DEPLOY / "systemd" / "edgeloop-sandbox.service").read_text()
    assert "RestrictNamespaces=yes" in agent
    assert "EDGELOOP_SANDBOX_SOCKET=/run/edgeloop-sandbox/sandbox.sock" in agent
    assert "--socket /run/edgeloop-sandbox/sandbox.sock" in sbx
    assert re.search(r"^RestrictNamespaces=user mnt net pid ipc uts cgroup$", sbx, re.M)
    assert re.search(r"^User=edgeloop-sandbox$", sbx, re.M) and "CapabilityBoundingSet=\n" in sbx


def test_shell_scripts_pass_shellcheck():
    sc = tool("shellcheck")
    ok(run(sc, "-x", "deploy/systemd/install.sh", "scripts/setup-deploy-tools.sh", "scripts/setup-sandbox.sh",
           "scripts/apt-lib.sh", "scripts/setup-llm.sh", "scripts/stage-edge.sh"))


# --- compose ----------------------------------------------------------------------------

@pytest.mark.parametrize("args", [[], ["--env-file", "llm/openai.env"], ["--env-file", "llm/vllm.env"],
                                  ["--env-file", "llm/ollama.env", "--profile", "ollama"]])
def test_compose_config_is_valid(args):
    compose_dir = DEPLOY / "compose"
    p = run(tool("docker-compose"), "-f", "compose.yaml", *args, "config", cwd=compose_dir)
    ok(p)
    for service in ("kafka", "topics", "model", "edge-1", "edge-2", "sensor", "agent", "prometheus", "grafana"):
        assert f"\n  {service}:\n" in p.stdout
    if args:
        env = dict(line.split("=", 1) for line in (compose_dir / args[1]).read_text().splitlines()
                   if line and not line.startswith("#"))
        assert f"EDGELOOP_LLM_BASE_URL: {env['EDGELOOP_LLM_BASE_URL']}" in p.stdout


def test_compose_file_matches_the_compose_spec_schema():
    ok(run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "deploy/compose/compose.yaml"))


# --- Kubernetes -------------------------------------------------------------------------

def k8s_files() -> list[Path]:
    return sorted(p for p in (DEPLOY / "k8s").rglob("*.yaml") if p.name != "kustomization.yaml")


def test_kubernetes_manifests_match_the_schemas():
    ok(run(tool("kubernetes-validate"), "--strict", *map(str, k8s_files())))


def test_kustomizations_list_every_manifest_and_render():
    listed = set()
    for k in (DEPLOY / "k8s").rglob("kustomization.yaml"):
        for res in re.findall(r"^\s*- (\S+\.yaml)$", k.read_text(), re.M):
            assert (k.parent / res).is_file(), f"{k}: {res} missing"
            listed.add((k.parent / res).resolve())
        if shutil.which("kubectl"):
            ok(run("kubectl", "kustomize", str(k.parent)))
    # The example Secrets stay out, so applying never overwrites a real key.
    assert {p.resolve() for p in k8s_files()} - listed == {
        (DEPLOY / "k8s" / f"{name}.example.yaml").resolve() for name in ("llm-secret", "kafka-secret")}


def test_edge_workers_never_outnumber_partitions():
    config = (DEPLOY / "k8s" / "config.yaml").read_text()
    edge = (DEPLOY / "k8s" / "edge.yaml").read_text()
    partitions = int(re.search(r'EDGELOOP_PARTITIONS: "(\d+)"', config).group(1))
    assert int(re.search(r"^  replicas: (\d+)", edge, re.M).group(1)) <= partitions
    assert int(re.search(r"maxReplicas: (\d+)", edge).group(1)) <= partitions


# --- images -----------------------------------------------------------------------------

def test_dockerfiles_parse_and_copy_only_what_exists(tmp_path):
    py = TOOLS_VENV / "python"
    if not py.exists():
        pytest.skip("the dockerfile parser is not installed: run scripts/setup-deploy-tools.sh")
    script = ("import dockerfile, json, sys\n"
              "print(json.dumps([[c.cmd, list(c.value), list(c.flags)] for c in dockerfile.parse_file(sys.argv[1])]))")
    for name, last_stage in (("Dockerfile.edge", "edge"), ("Dockerfile.core", "core")):
        p = run(str(py), "-c", script, str(DEPLOY / "docker" / name))
        ok(p)
        cmds = json.loads(p.stdout)
        froms = [v for c, v, _ in cmds if c == "FROM"]
        assert froms[-1][-1] == last_stage, f"{name}: `docker build` without --target must give {last_stage}"
        for c, v, flags in cmds:
            if c == "COPY" and not any(f.startswith("--from") for f in flags):
                for src in v[:-1]:
                    assert (REPO / src).exists(), f"{name}: COPY {src} does not exist"
        ignore = (DEPLOY / "docker" / f"{name}.dockerignore").read_text()
        # The edge's list is scripts/stage-edge.sh's (test_wheel_contents checks it); no agent there.
        core_only = ("evaluation", "llm_agents") if name == "Dockerfile.core" else ()
        for src in ("contracts", "streams", "inference", "edgeloop_app", *core_only, "pyproject.toml"):
            assert f"!{src}" in ignore
        if name == "Dockerfile.edge":
            assert "!llm_agents" not in ignore and "!trafficlab" not in ignore


def test_the_edge_image_installs_no_torch():
    """The edge image installs the base package (plus `capture` for the sensor): no torch there."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]) + " " + " ".join(project["optional-dependencies"]["capture"])
    assert "onnxruntime" in base and "torch" not in base
    edge = (DEPLOY / "docker" / "Dockerfile.edge").read_text()
    installs = re.findall(r"pip install (\S+)", edge)
    assert installs == [".", "'.[capture]'"], installs
    assert "torch" in (DEPLOY / "docker" / "Dockerfile.core").read_text()
