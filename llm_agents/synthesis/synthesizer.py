"""Synthetic training windows with self-evolution (arXiv 2406.04276, "Generative AI-in-the-loop").

Per class, for a bounded number of rounds:
1. generate a batch: with an LLM client, batched `synthesize_windows` requests (task,
   real examples, field explanations, output format, plus last round's feedback); offline
   (client None), the statistical generator `baselines.KDEWindowGenerator`;
2. drop every window with a flow that is malformed or breaks a physical rule
   (`constraints.check_flows`), and count them;
3. score the batch against the real windows of its class (`fidelity.score_batch`);
4. keep it only if `evaluate(train + batch)`, macro-F1 on real validation windows,
   beats the best so far;
5. feed the worst findings (features furthest from real, with real and synthetic
   quantiles, rules broken, the discriminator's AUC, the gate's verdict) into the next
   round: as prompt text for the LLM, as bandwidth changes for the statistical generator.

    >>> ev = make_sklearn_evaluator(train_real, val_real)
    >>> res = Synthesizer(client).synthesize_class("syn_scan", train_real, 16, rounds=3, evaluate=ev)
    >>> res.kept, res.final_f1, [r.kept for r in res.rounds], res.prompt_tokens

If the endpoint is unreachable or the budget is spent, later rounds fall back to the
statistical generator (`fallback_to_stat`), and their windows say so in `provenance`.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Protocol

import numpy as np
import pandas as pd

from llm_agents.synthesis.baselines import KDEWindowGenerator
from llm_agents.synthesis.constraints import check_flows
from llm_agents.errors import (LLMBadOutput, LLMBadRequest, LLMBudgetExceeded, LLMContextExceeded,
                               LLMRateLimited, LLMTimeout, LLMUnavailable)
from llm_agents.synthesis.fidelity import FidelityReport, score_batch
from llm_agents.synthesis.sklearn_eval import make_sklearn_evaluator
from llm_agents.synthesis.prompt import (FIELD_NAMES, SyntheticWindows, SynthWindow,
                                         example_rows, feedback_text, prompt_variables)
from llm_agents.window_frames import SyntheticIdentity, window_lengths

__all__ = ["AugmentationResult", "RoundReport", "SynthesisResult", "Synthesizer",
           "make_sklearn_evaluator"]

log = logging.getLogger(__name__)
Evaluate = Callable[[pd.DataFrame], float]
TEMPLATE = "synthesize_windows"
PURPOSE = "synthesize"


class JSONClient(Protocol):
    """What the synthesizer needs of `llm_agents.client.LLMClient`."""

    def complete_json(self, template: str, variables: Any, schema: Any, *, purpose: str,
                      max_tokens: int | None = None) -> Any: ...


@dataclass
class RoundReport:
    """One round of one class: what was generated, dropped, scored and decided."""

    round: int
    source: str  # "llm:<model>" or "stat:kde"
    requested_windows: int
    generated_windows: int = 0
    valid_windows: int = 0
    malformed_flows: int = 0
    rejected_flows: int = 0
    rejected_windows: int = 0
    violations: dict[str, int] = field(default_factory=dict)
    failed_requests: int = 0
    errors: list[str] = field(default_factory=list)
    fidelity: FidelityReport | None = None
    f1_before: float = float("nan")
    f1_after: float | None = None
    kept: bool = False
    feedback_in: str = ""  # the feedback this round's prompts carried
    prompt_tokens: int = 0
    completion_tokens: int = 0
    bandwidth: dict[str, float] | None = None  # statistical generator, after adapting
    llm_gone: bool = False  # the endpoint refused for good (budget, unreachable, bad request)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fidelity"] = self.fidelity.to_dict() if self.fidelity else None
        return d


@dataclass
class SynthesisResult:
    """Everything one class's self-evolution produced: kept windows and every round."""

    label: str
    kept: pd.DataFrame
    rounds: list[RoundReport]
    baseline_f1: float
    final_f1: float

    @property
    def provenance(self) -> list[str]:
        return sorted(set(self.kept["provenance"])) if len(self.kept) else []

    @property
    def sources(self) -> list[str]:
        return sorted({r.source for r in self.rounds})

    @property
    def prompt_tokens(self) -> int:
        return sum(r.prompt_tokens for r in self.rounds)

    @property
    def completion_tokens(self) -> int:
        return sum(r.completion_tokens for r in self.rounds)

    @property
    def kept_windows(self) -> int:
        return int(self.kept["window_id"].nunique()) if len(self.kept) else 0


@dataclass
class AugmentationResult:
    """Self-evolution over several classes; `train` is the real training frame plus every
    kept batch, in the order they were kept."""

    per_class: dict[str, SynthesisResult]
    train: pd.DataFrame
    baseline_f1: float
    final_f1: float


@dataclass
class _ClassRun:
    """The state of one class's self-evolution between rounds."""

    label: str
    real: pd.DataFrame
    train: pd.DataFrame
    best: float
    use_llm: bool
    feedback: str = ""
    gen: KDEWindowGenerator | None = None
    kept: list[pd.DataFrame] = field(default_factory=list)
    reports: list[RoundReport] = field(default_factory=list)
    examples: list = field(init=False)
    lengths: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.examples = example_rows(self.real, self.label)
        self.lengths = window_lengths(self.real[self.real["label"] == self.label])


class Synthesizer:
    """Per-class synthesis with self-evolution; `client` None means offline (statistical).

    `windows_per_request` bounds each answer's size (tokens); `examples_per_request` real
    windows go into each prompt, drawn afresh per request. A batch is kept when it beats the
    best macro-F1 by more than `min_improvement`. Deterministic for a seed, up to what the
    LLM returns.
    """

    def __init__(self, client: JSONClient | None = None, *, k: int = 8, seconds: float = 10.0,
                 windows_per_request: int = 4, examples_per_request: int = 4,
                 max_tokens: int | None = None, seed: int = 0, min_improvement: float = 0.0,
                 fallback_to_stat: bool = True, stat_bandwidth: float = 0.5, n_worst: int = 3,
                 score: bool = True) -> None:
        self.client, self.k, self.seconds, self.seed = client, k, seconds, seed
        self.windows_per_request, self.examples_per_request = windows_per_request, examples_per_request
        self.max_tokens, self.min_improvement = max_tokens, min_improvement
        self.fallback_to_stat, self.stat_bandwidth = fallback_to_stat, stat_bandwidth
        self.n_worst, self.score = n_worst, score
        self.identity = SyntheticIdentity(f"synth-{seed}")
        self.rng = np.random.default_rng(seed)

    @property
    def mode(self) -> str:
        return "offline" if self.client is None else "llm"

    def synthesize(self, real: pd.DataFrame, n_windows: int, *, evaluate: Evaluate,
                   classes: Iterable[str] | None = None, rounds: int = 3,
                   benign: str = "benign") -> AugmentationResult:
        """Self-evolution for each class in turn (default: every class but `benign`), each
        gated against the training set as augmented by the classes before it."""
        classes = list(classes) if classes is not None else sorted(set(real["label"]) - {benign})
        train, best = real, evaluate(real)
        baseline, per_class = best, {}
        for label in classes:
            res = self.synthesize_class(label, real, n_windows, rounds, evaluate, train=train,
                                        best=best)
            per_class[label] = res
            if len(res.kept):
                train = pd.concat([train, res.kept], ignore_index=True)
            best = res.final_f1
        return AugmentationResult(per_class, train, baseline, best)

    def synthesize_class(self, label: str, real_windows_df: pd.DataFrame, n_windows: int,
                         rounds: int = 3, evaluate: Evaluate | None = None, *,
                         train: pd.DataFrame | None = None,
                         best: float | None = None) -> SynthesisResult:
        """Up to `rounds` batches of `n_windows` windows of `label`, each kept only if it
        improves `evaluate`. `real_windows_df` holds the real training windows (all classes);
        `train` (default: the same) is what batches are added to, `best` its known score."""
        if evaluate is None:
            raise ValueError("synthesize_class needs evaluate: macro-F1 on real validation data")
        train = real_windows_df if train is None else train
        run = _ClassRun(label, real_windows_df, train, evaluate(train) if best is None else best,
                        use_llm=self.client is not None)
        baseline = run.best
        for r in range(rounds):
            batch, rep = self._generate(run, r, n_windows)
            self._judge(run, batch, rep, evaluate)
            run.feedback = feedback_text(r + 1, rep.fidelity, asked=n_windows,
                                         valid=rep.valid_windows, violations=rep.violations,
                                         kept=rep.kept if len(batch) else None,
                                         f1_before=rep.f1_before, f1_after=rep.f1_after,
                                         n_worst=self.n_worst)
            run.reports.append(rep)
            log.info("synthesize %s round %d (%s): %d/%d valid windows, F1 %.3f -> %s, %s",
                     label, r, rep.source, rep.valid_windows, n_windows, rep.f1_before,
                     "-" if rep.f1_after is None else f"{rep.f1_after:.3f}",
                     "kept" if rep.kept else "dropped")
        kept = (pd.concat(run.kept, ignore_index=True) if run.kept
                else real_windows_df.iloc[0:0].copy())
        return SynthesisResult(label, kept, run.reports, baseline, run.best)

    def _generate(self, run: "_ClassRun", r: int, n_windows: int) -> tuple[pd.DataFrame, RoundReport]:
        """One round's candidate batch: from the LLM while it answers, else statistical."""
        if run.use_llm:
            batch, rep = self._llm_round(r, run, n_windows)
            run.use_llm = not (rep.llm_gone and self.fallback_to_stat)
            return batch, rep
        if run.gen is None:
            run.gen = KDEWindowGenerator(run.real, run.label, seed=self.seed + r,
                                         bandwidth=self.stat_bandwidth, seconds=self.seconds,
                                         identity=self.identity)
        batch, rep = run.gen.generate(n_windows), RoundReport(r, run.gen.name, n_windows)
        rep.generated_windows = rep.valid_windows = _n_windows(batch)
        return batch, rep

    def _judge(self, run: "_ClassRun", batch: pd.DataFrame, rep: RoundReport,
               evaluate: Evaluate) -> None:
        """Score the batch, gate it on real validation F1, adapt the statistical generator."""
        rep.f1_before = run.best
        if len(batch):
            if self.score:
                rep.fidelity = score_batch(batch, run.real, run.label, k=self.k, seed=self.seed)
            rep.f1_after = evaluate(pd.concat([run.train, batch], ignore_index=True))
            rep.kept = rep.f1_after > run.best + self.min_improvement
        if rep.kept:
            run.train = pd.concat([run.train, batch], ignore_index=True)
            run.kept.append(batch)
            run.best = rep.f1_after  # type: ignore[assignment]
        if run.gen is not None and rep.source == run.gen.name and rep.fidelity is not None:
            rep.bandwidth = run.gen.adapt(rep.fidelity.worst(self.n_worst))

    # The LLM path -----------------------------------------------------------------------

    def _llm_round(self, r: int, run: "_ClassRun", n_windows: int) -> tuple[pd.DataFrame, RoundReport]:
        rep = RoundReport(r, "llm", n_windows, feedback_in=run.feedback)
        frames, left = [], n_windows
        while left > 0:
            want = min(self.windows_per_request, left)
            pick = self.rng.permutation(len(run.examples))[: self.examples_per_request]
            variables = prompt_variables(run.label, [run.examples[j] for j in pick], n_windows=want,
                                         k=self.k, horizon_ms=self.seconds * 1000.0,
                                         lengths=run.lengths, feedback=run.feedback)
            try:
                res = self.client.complete_json(  # type: ignore[union-attr]
                    TEMPLATE, variables, SyntheticWindows, purpose=PURPOSE,
                    max_tokens=self.max_tokens)
            except LLMContextExceeded as exc:
                rep.failed_requests += 1
                rep.errors.append(f"{exc.kind}: {exc}")
                if self._fit_context():
                    continue  # the same windows, asked with a smaller prompt and answer
                rep.llm_gone = True
                break
            except (LLMBadOutput, LLMBadRequest) as exc:
                rep.failed_requests += 1
                rep.errors.append(f"{exc.kind}: {exc}")
                if isinstance(exc, LLMBadRequest):
                    rep.llm_gone = True  # the same prompt shape will be refused again
                    break
                left -= want
                continue
            except (LLMRateLimited, LLMTimeout) as exc:
                rep.failed_requests += 1
                rep.errors.append(f"{exc.kind}: {exc}")
                break  # the client has retried already; try again next round
            except (LLMUnavailable, LLMBudgetExceeded) as exc:
                rep.failed_requests += 1
                rep.errors.append(f"{exc.kind}: {exc}")
                rep.llm_gone = True
                break
            rep.source = f"llm:{res.model}" if res.model else "llm"
            rep.prompt_tokens += int(res.prompt_tokens)
            rep.completion_tokens += int(res.completion_tokens)
            data: SyntheticWindows = res.data
            rep.malformed_flows += data.malformed_flows
            rep.rejected_windows += len(data.windows) - min(len(data.windows), want)
            frames.append(self._to_frame(data.windows[:want], run.label, rep))
            left -= want
        batch = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        rep.valid_windows = _n_windows(batch)
        return batch, rep

    def _fit_context(self) -> bool:
        """After a context refusal: halve the examples per prompt, then the windows per
        answer, for this and every later request (the model's context does not grow).
        False when both are down to one: this model cannot take the task."""
        if self.examples_per_request > 1:
            self.examples_per_request //= 2
        elif self.windows_per_request > 1:
            self.windows_per_request //= 2
        else:
            return False
        log.warning("synthesis prompt too long for the model's context: now %d examples and %d windows per request",
                    self.examples_per_request, self.windows_per_request)
        return True

    def _to_frame(self, windows: list[SynthWindow], label: str, rep: RoundReport) -> pd.DataFrame:
        """Valid windows of an answer as a window frame; the rest counted in `rep`."""
        rep.generated_windows += len(windows)
        long = sum(len(win.flows) > self.k for win in windows)
        if long:  # cut to K flows, as the windower would have closed them
            rep.violations["window>k_truncated"] = rep.violations.get("window>k_truncated", 0) + long
        flows = [(w, f) for w, win in enumerate(windows) for f in win.flows[: self.k]]
        if not flows:
            return pd.DataFrame()
        rows = pd.DataFrame([[float(getattr(f, c)) for c in FIELD_NAMES] for _, f in flows],
                            columns=list(FIELD_NAMES))
        widx = np.array([w for w, _ in flows])
        rows = _derive_totals(rows)
        gap = np.where(np.r_[True, widx[1:] != widx[:-1]], 0.0, rows["gap_ms"].to_numpy())
        span = pd.Series(gap).groupby(widx).sum()
        too_long = set(span.index[~(span < self.seconds * 1000.0)])
        if too_long:
            rep.violations["window_span"] = rep.violations.get("window_span", 0) + len(too_long)
            rep.rejected_windows += len(too_long)
            keep = ~np.isin(widx, list(too_long))
            rows, widx, gap = rows[keep].reset_index(drop=True), widx[keep], gap[keep]
        if not len(rows):
            return pd.DataFrame()
        prov = rep.source if rep.source.startswith("llm:") else "llm"
        frame = self.identity.assign(rows, widx, gap, rows["new_dst"].to_numpy(dtype=bool), label,
                                     prov, self.seconds).drop(columns=["gap_ms", "new_dst"])
        chk = check_flows(frame)
        for rule, n in chk.by_rule.items():
            rep.violations[rule] = rep.violations.get(rule, 0) + n
        rep.rejected_flows += chk.n_bad
        bad = set(frame.loc[~chk.ok, "window_id"])
        rep.rejected_windows += len(bad)
        return frame[~frame["window_id"].isin(bad)].reset_index(drop=True)


def _derive_totals(rows: pd.DataFrame) -> pd.DataFrame:
    """Totals the model is not asked for: packets, bytes and the mean packet size."""
    out = rows.copy()
    out["packets"] = out["src2dst_packets"] + out["dst2src_packets"]
    out["bytes"] = out["src2dst_bytes"] + out["dst2src_bytes"]
    pk = out["packets"].to_numpy(dtype=np.float64)
    by = out["bytes"].to_numpy(dtype=np.float64)
    out["mean_ps"] = np.where(pk > 0, by / np.where(pk > 0, pk, 1.0), 0.0)
    return out


def _n_windows(df: pd.DataFrame) -> int:
    return int(df["window_id"].nunique()) if len(df) and "window_id" in df else 0
