"""`edgeloop experiment policies`: Hermes Table I for edgeloop's policy intents.

Thirty intents (six per lab scenario: block, rate-limit, raise a class threshold, isolate
a host, allow-list a service, and block an attacker the intent does not name; some from
operator text, some derived from an alert aggregate) are answered by four arms, and each answer is scored on the scenario's
digital twin. Success = the twin's KPIs meet the intent's targets.

    direct      one LLM call returns the policy itself (no code, no feedback)
    coder_only  the LLM writes one `make_policy` function from the intent, run in the
                sandbox, with the same bounded feedback rounds as the loop
    blueprint   the full loop: Designer (+ self-review) → Coder → sandbox → validator
    library     the expert library alone (offline mode)

    >>> res = run_experiment(load_scenarios(), client)     # client=None: library arm only
    >>> print(res.to_markdown()); res.write(Path("out/experiments/policies"))

The lab scenarios come from `data/lab/*.parquet` when present, else from the synthetic
twin datasets of llm_agents.experiments.twin_scenarios; the table says which, and which model.
"""
from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import click
from pydantic import ValidationError

from contracts.policy_model import Policy, PolicyActions
from llm_agents.blueprints import (BlueprintLoop, Coder, Designer, ExpertLibrary, Intent, Sandbox,
                                   StepCodeAnswer, StepSource, check_source, intent_from_alert, parse_intent)
from llm_agents.blueprints.loop import given_values
from llm_agents.blueprints.sandbox import ALLOWED_MODULES
from llm_agents.blueprints.schema import GIVEN
from llm_agents.errors import LLMError
from llm_agents.prompts import data_block
from llm_agents.twin.model import DigitalTwin
from llm_agents.experiments.twin_scenarios import SCENARIOS, Scenario, load_scenarios

ARMS = ("direct", "coder_only", "blueprint", "library")
LLM_ARMS = ("direct", "coder_only", "blueprint")
POLICY_SEMANTICS = (
    "block_sources: addresses/CIDRs; their new flows are dropped. rate_limit_sources: list of "
    "{sources, packets_per_s}; each entry's sources share one packet budget per second. "
    "class_thresholds: list of {attack, min_confidence}; windows of that class alert only at that "
    "confidence or above. suppress_alerts: list of {attack, key}; matching windows do not alert. "
    "isolate_hosts: every flow to or from them is cut. allow_services: list of {ip, port, proto}; "
    "exempt from network actions, and windows that only reach them do not alert.")


@dataclass(frozen=True)
class ExperimentIntent:
    intent_id: str
    scenario: str
    intent: Intent


@dataclass
class ArmResult:
    arm: str
    intent_id: str
    scenario: str
    action: str
    origin: str
    ok: bool
    misses: list[str] = field(default_factory=list)
    llm_calls: int = 0
    rounds: int = 0
    seconds: float = 0.0
    provenance: str = ""
    error: str = ""


def _alert_for(twin: DigitalTwin, sc: Scenario) -> dict[str, Any]:
    """The alert aggregate an edge worker would raise for the attacker (built from the twin)."""
    code = twin.class_code.get(sc.name, -1)
    keys = twin.windows["key"].astype(str).to_numpy()
    sel = twin.w_alert0 & (twin.w_pred == code) & (keys == sc.attacker)
    return {"alert_id": f"{sc.name}-{sc.attacker}", "key": sc.attacker, "attack": sc.name,
            "windows": int(sel.sum()), "max_confidence": float(twin.w_conf[sel].max()) if sel.any() else 0.0,
            "src_ips": [sc.attacker]}


def build_intents(sc: Scenario, twin: DigitalTwin) -> list[ExperimentIntent]:
    """Six intents for one scenario; which come from alerts alternates between scenarios."""
    a, name, web = sc.attacker, sc.name, sc.web
    from_alert = SCENARIOS.index(name) % 2 == 1 if name in SCENARIOS else False
    alert = _alert_for(twin, sc)
    block = (intent_from_alert(alert, "block_source") if from_alert else
             parse_intent(f"Stop the {name} from {a} without hurting the web service {web.ip}:{web.port}/{web.proto}",
                          classes=(name,)))
    rate = (parse_intent(f"Rate-limit {a}: it floods the network with {name} traffic", classes=(name,))
            if from_alert else intent_from_alert(alert, "rate_limit_source"))
    out = [block, rate,
           parse_intent(f"Too many low-confidence {name} alerts: raise the {name} threshold", classes=(name,)),
           parse_intent(f"Isolate host {a}, it is compromised", classes=(name,))]
    if sc.dns is not None:
        dns = sc.dns
        out.append(parse_intent(f"Allow-list the DNS service at {dns.ip}:{dns.port}/{dns.proto}: "
                                f"its clients trigger false {name} alerts", classes=(name,)))
    # No address given: the policy has to find the attacker among hosts the detector also
    # flags by mistake now and then.
    out.append(parse_intent(f"Block whoever sends the {name} traffic", classes=(name,)))
    return [ExperimentIntent(f"{name}-{i + 1}", name, it) for i, it in enumerate(out)]


class _Arms:
    """The four ways of answering an intent, sharing one sandbox and library."""

    def __init__(self, client: Any | None, library: ExpertLibrary, sandbox: Sandbox, max_rounds: int) -> None:
        self.client, self.library, self.sandbox, self.max_rounds = client, library, sandbox, max_rounds

    def library_arm(self, intent: Intent, twin: DigitalTwin) -> tuple[Policy | None, int, int, str, str]:
        loop = BlueprintLoop(Designer(None, self.library), Coder(None, self.library), self.sandbox, max_rounds=1)
        out = loop.run(intent, twin)
        err = "" if out.policy else "; ".join(out.rounds[-1].problems[:2]) if out.rounds else "no rounds"
        return out.policy, 0, len(out.rounds), out.provenance, err

    def blueprint_arm(self, intent: Intent, twin: DigitalTwin) -> tuple[Policy | None, int, int, str, str]:
        loop = BlueprintLoop(Designer(self.client, self.library), Coder(self.client, self.library), self.sandbox,
                             max_rounds=self.max_rounds)
        out = loop.run(intent, twin)
        err = "" if out.ok else "; ".join(out.rounds[-1].problems[:2]) if out.rounds else "no rounds"
        return out.policy, out.llm_calls, len(out.rounds), out.provenance, err

    def direct_arm(self, intent: Intent, twin: DigitalTwin) -> tuple[Policy | None, int, int, str, str]:
        variables = {"intent": data_block("intent", intent.for_code()),
                     "required_kpis": data_block("required_kpis", _kpis(intent)),
                     "twin": data_block("twin", twin.summary()), "semantics": POLICY_SEMANTICS}
        try:
            res = self.client.complete_json("direct_policy", variables, PolicyActions, purpose="policy_direct")
        except LLMError as exc:
            return None, 1, 1, "", f"{type(exc).__name__}: {exc}"
        return Policy.from_actions(res.data), 1, 1, f"llm:{res.model}", ""

    def coder_only_arm(self, intent: Intent, twin: DigitalTwin) -> tuple[Policy | None, int, int, str, str]:
        work = Path(tempfile.mkdtemp(prefix="edgeloop-exp-"))
        try:
            view = twin.export_view(work)
            return self._code_rounds(intent, twin, view)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _code_rounds(self, intent: Intent, twin: DigitalTwin, view: Path) -> tuple[Policy | None, int, int, str, str]:
        inputs = ["flows", "windows", "intent", "class_names", "alert_threshold"]
        feedback, previous, model, policy, err = "", "", "", None, ""
        for n in range(1, self.max_rounds + 1):
            variables = {"intent": data_block("intent", intent.for_code()),
                         "required_kpis": data_block("required_kpis", _kpis(intent)),
                         "twin": data_block("twin", twin.summary()), "given": data_block("given", GIVEN),
                         "allowed_modules": ", ".join(ALLOWED_MODULES),
                         "feedback": data_block("feedback", {"problem": feedback, "previous_source": previous})}
            try:
                res = self.client.complete_json("code_policy", variables, StepCodeAnswer, purpose="policy_code")
            except LLMError as exc:
                feedback, err = str(exc), f"{type(exc).__name__}: {exc}"
                continue
            model, previous = res.model, res.data.source
            policy, feedback = self._run_code(res.data.source, inputs, intent, twin, view)
            if policy is not None:
                misses = twin.evaluate(policy).check(intent.required_kpis())
                if not misses:
                    return policy, n, n, f"llm:{model}", ""
                feedback = "; ".join(misses + [f"policy was: {'; '.join(policy.describe())}"])
            err = feedback
        return policy, self.max_rounds, self.max_rounds, f"llm:{model}" if model else "", err

    def _run_code(self, source: str, inputs: list[str], intent: Intent, twin: DigitalTwin,
                  view: Path) -> tuple[Policy | None, str]:
        problems = check_source(source, "make_policy", inputs)
        if problems:
            return None, "; ".join(problems)
        run = self.sandbox.run([StepSource("make_policy", source, inputs, ["policy"])],
                               given=given_values(intent, twin), view=view)
        if not run.ok:
            return None, run.problem()
        try:
            return Policy.from_actions(run.outputs.get("policy") or {}), ""
        except (ValidationError, TypeError, ValueError) as exc:
            return None, f"the policy is not valid: {str(exc)[:400]}"


def _kpis(intent: Intent) -> list[dict[str, Any]]:
    return [k.model_dump(mode="json") for k in intent.required_kpis()]


@dataclass
class ExperimentResult:
    rows: list[ArmResult]
    model: str
    data_source: str
    arms_run: list[str]
    notes: list[str] = field(default_factory=list)

    def summary(self) -> list[dict[str, Any]]:
        out = []
        for arm in ARMS:
            rows = [r for r in self.rows if r.arm == arm]
            if arm not in self.arms_run:
                out.append({"arm": arm, "intents": 0, "succeeded": 0, "success_rate": None,
                            "llm_calls": 0, "mean_rounds": None})
                continue
            ok = sum(r.ok for r in rows)
            out.append({"arm": arm, "intents": len(rows), "succeeded": ok,
                        "success_rate": round(ok / len(rows), 3) if rows else None,
                        "llm_calls": sum(r.llm_calls for r in rows),
                        "mean_rounds": round(sum(r.rounds for r in rows) / len(rows), 2) if rows else None})
        return out

    def to_markdown(self) -> str:
        lines = ["# Policy intents on the digital twin (Hermes Table I shape)", "",
                 f"- model: {self.model}", f"- data: {self.data_source}",
                 f"- intents: {len({r.intent_id for r in self.rows})}; success = the twin's KPIs meet the intent's targets",
                 *[f"- {n}" for n in self.notes], "",
                 "| arm | intents | succeeded | success rate | LLM calls | mean rounds |",
                 "| --- | --- | --- | --- | --- | --- |"]
        for s in self.summary():
            rate = "not run" if s["success_rate"] is None and s["intents"] == 0 else f"{100 * s['success_rate']:.1f}%"
            lines.append(f"| {s['arm']} | {s['intents']} | {s['succeeded']} | {rate} | {s['llm_calls']} | "
                         f"{s['mean_rounds'] if s['mean_rounds'] is not None else '-'} |")
        lines += ["", "| intent | action | origin | " + " | ".join(self.arms_run) + " |",
                  "| --- | --- | --- | " + " | ".join("---" for _ in self.arms_run) + " |"]
        for iid in dict.fromkeys(r.intent_id for r in self.rows):
            rows = {r.arm: r for r in self.rows if r.intent_id == iid}
            first = next(iter(rows.values()))
            cells = ["pass" if rows[a].ok else "fail" if a in rows else "-" for a in self.arms_run]
            lines.append(f"| {iid} | {first.action} | {first.origin} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def rows_csv(self) -> str:
        buf = io.StringIO()
        names = list(ArmResult.__dataclass_fields__)
        w = csv.DictWriter(buf, fieldnames=names + ["model", "data"])
        w.writeheader()
        for r in self.rows:
            d = asdict(r)
            d["misses"] = " | ".join(d["misses"])
            w.writerow({**d, "model": self.model, "data": self.data_source})
        return buf.getvalue()

    def summary_csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["arm", "intents", "succeeded", "success_rate", "llm_calls",
                                            "mean_rounds", "model", "data"])
        w.writeheader()
        for s in self.summary():
            w.writerow({**s, "model": self.model, "data": self.data_source})
        return buf.getvalue()

    def write(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        files = {"summary.md": self.to_markdown(), "summary.csv": self.summary_csv(), "results.csv": self.rows_csv(),
                 "results.json": json.dumps({"model": self.model, "data": self.data_source, "notes": self.notes,
                                             "rows": [asdict(r) for r in self.rows]}, indent=1)}
        for name, text in files.items():
            (directory / name).write_text(text, encoding="utf-8")
        return [directory / n for n in files]


def run_experiment(scenarios: Sequence[Scenario], client: Any | None, *, arms: Sequence[str] = ARMS,
                   max_rounds: int = 3, sandbox: Sandbox | None = None, library: ExpertLibrary | None = None,
                   max_intents: int | None = None,
                   progress: Callable[[ArmResult], None] | None = None) -> ExperimentResult:
    """Every intent of every scenario through each arm; LLM arms are skipped without a client."""
    runner = _Arms(client, library or ExpertLibrary.load(), sandbox or Sandbox(), max_rounds)
    arms_run = [a for a in arms if a in ARMS and (client is not None or a not in LLM_ARMS)]
    notes = [] if client is not None else ["offline (no LLM endpoint configured): LLM arms not run"]
    rows: list[ArmResult] = []
    done = 0
    for sc in scenarios:
        twin = sc.twin()
        for ei in build_intents(sc, twin):
            if max_intents is not None and done >= max_intents:
                break
            done += 1
            for arm in arms_run:
                row = _score(arm, ei, twin, getattr(runner, f"{arm}_arm"))
                rows.append(row)
                if progress:
                    progress(row)
    model = getattr(client, "model", "") or ("none (offline)" if client is None else "server default")
    sources = sorted({sc.source for sc in scenarios})
    return ExperimentResult(rows, model, ", ".join(sources), arms_run, notes)


def _score(arm: str, ei: ExperimentIntent, twin: DigitalTwin, fn: Callable[..., Any]) -> ArmResult:
    t0 = time.perf_counter()
    policy, calls, rounds, provenance, err = fn(ei.intent, twin)
    row = ArmResult(arm, ei.intent_id, ei.scenario, ei.intent.action or "", ei.intent.origin, False,
                    llm_calls=calls, rounds=rounds, provenance=provenance, error=err[:500])
    if policy is not None:
        row.misses = twin.evaluate(policy).check(ei.intent.required_kpis())
        row.ok = not row.misses
    else:
        row.misses = ["no policy"]
    row.seconds = round(time.perf_counter() - t0, 3)
    return row


@click.command("policies")
@click.option("--lab-dir", type=click.Path(path_type=Path), default=Path("data/lab"), show_default=True,
              help="Lab captures (*.parquet with a label column); synthetic scenarios when empty.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("out/experiments/policies"),
              show_default=True)
@click.option("--arms", default=",".join(ARMS), show_default=True, help="Comma-separated subset of arms.")
@click.option("--max-rounds", default=3, show_default=True, type=click.IntRange(1, 10))
@click.option("--max-intents", default=None, type=click.IntRange(1), help="Stop after this many intents.")
@click.option("--seed", default=0, show_default=True)
def policies(lab_dir: Path, out_dir: Path, arms: str, max_rounds: int, max_intents: int | None, seed: int) -> None:
    """Success rates of direct, coder-only, blueprint-loop and library policies on the twin."""
    from llm_agents.client import LLMClient
    from streams.settings import load_settings
    client = LLMClient.from_settings(load_settings())
    chosen = [a.strip() for a in arms.split(",") if a.strip()]
    unknown = [a for a in chosen if a not in ARMS]
    if unknown:
        raise click.BadParameter(f"unknown arms {unknown}; choose from {', '.join(ARMS)}", param_hint="--arms")
    scenarios = load_scenarios(lab_dir, seed=seed)
    res = run_experiment(scenarios, client, arms=chosen, max_rounds=max_rounds, max_intents=max_intents,
                         progress=lambda r: click.echo(f"{r.intent_id:18s} {r.arm:10s} {'pass' if r.ok else 'FAIL'} "
                                                       f"{r.seconds:6.2f}s {'; '.join(r.misses)[:100]}", err=True))
    files = res.write(out_dir)
    click.echo(res.to_markdown())
    click.echo("written: " + ", ".join(str(f) for f in files))
