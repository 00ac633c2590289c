"""One search trial: the study's objective.

A trial asks the bound space for its settings, reuses an earlier trial with the same ones (its
twin), or runs compress: first the undistilled proxy when it asks for distillation (a size,
latency or memory limit the proxy breaks, distillation cannot mend), then the trial itself.
Its measurements, the budget's checks and what ran are recorded as the trial's user
attributes and constraints; edgegolf/search/front.py reads them back.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgegolf.errors import EdgegolfError
from edgegolf.search.space import BoundSpace

log = logging.getLogger(__name__)

MB = 1e6

# Budget limits distillation cannot move (it changes weights, not shapes): a proxy that breaks one rejects
UNCHANGED_BY_DISTILLATION = ("size_mb", "zstd_mb", "p50_ms", "p95_ms", "p50_ratio", "p95_ratio", "memory_mb")

# what a twin (an earlier trial with the same settings) lends a trial, besides its constraints
_TWIN_ATTRS = ("measured", "checks", "bundle", "reused", "stages", "rejected_by_proxy", "proxy")


class StudyFull(EdgegolfError):
    """Raised in a trial asked for at the same moment as another worker's last one; it ends
    as a failed trial (samplers ignore those) and runs nothing."""


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system  # memory probes run in children


@dataclass
class TrialObjective:
    """The objective `study.optimize` calls: (accuracy, latency ms, size MB) of one trial.

    `asked`, `mine` and `surplus` are what this process saw: every trial it was given, the
    trials it ran itself, and the trials it found not needed (the study was already full).
    """

    study: Any  # optuna.Study
    trials: int  # completed trials the study should hold
    bound: BoundSpace
    memo: Any  # the pipeline's StageCache, shared by this process's trials
    search_dir: Path
    source: Any  # what compress takes as its source
    recipe: Any  # the base Recipe
    budget: Any  # the Budget
    teacher_outputs: Any  # TeacherOutputs shared by the workers
    latency_field: str
    size_field: str
    trust_remote_code: bool = False
    asked: list[int] = field(default_factory=list)
    mine: list[int] = field(default_factory=list)
    surplus: list[int] = field(default_factory=list)

    def __call__(self, trial) -> tuple[float, float, float]:
        from edgegolf.search.study import HOST

        self.asked.append(trial.number)
        trial.set_user_attr("worker", {"host": HOST, "pid": os.getpid()})
        self._refuse_when_full(trial)
        params = self.bound.suggest(trial)
        twin = self._twin(params)
        if twin is not None:  # the sampler proposed settings already measured: reuse, do not rerun
            return self._reuse(trial, twin)
        return self._run(trial, params)

    def _refuse_when_full(self, trial) -> None:
        from optuna.trial import TrialState

        ahead = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
                 if t.number < trial.number]
        if len(ahead) >= self.trials:  # another worker asked at the same moment: the study is full
            trial.set_user_attr("surplus", True)
            self.surplus.append(trial.number)
            raise StudyFull(f"trial {trial.number} is not needed: the study already has {self.trials} trials")

    def _twin(self, params: dict[str, Any]):
        from optuna.trial import TrialState

        return next((t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                     if t.params == params and "measured" in t.user_attrs), None)

    @staticmethod
    def _reuse(trial, twin):
        for key in _TWIN_ATTRS:
            if key in twin.user_attrs:
                trial.set_user_attr(key, twin.user_attrs[key])
        for key, value in twin.constraints.items():
            trial.set_constraint(key, value)
        trial.set_user_attr("duplicate_of", twin.number)
        trial.set_user_attr("seconds", 0.0)
        return twin.values

    def _compress(self, bundle: Path, overrides: dict[str, Any]):
        from edgegolf.pipeline import compress

        result = compress(self.source, output=bundle, recipe=self.recipe, budget=self.budget, overrides=overrides,
                          force=True, trust_remote_code=self.trust_remote_code, cache=self.memo,
                          teacher_outputs=self.teacher_outputs)
        return result, measured_numbers(result, self.latency_field, self.size_field)

    def _run(self, trial, params: dict[str, Any]) -> tuple[float, float, float]:
        t, cpu = time.perf_counter(), cpu_seconds()
        hits = dict(self.memo.hits)
        bundle = self.search_dir / "trials" / str(trial.number)
        overrides = self.bound.overrides(params)
        if "distill" in overrides:
            # the cheap proxy first: the refit-only student (pruned, not trained), measured as compress
            # measures. Distillation moves accuracy only: a size, latency or memory limit this student
            # breaks, the distilled one breaks too, so the distillation is not spent on it
            result, measured = self._compress(bundle, {k: v for k, v in overrides.items() if k != "distill"})
            proxy = {"measured": measured, "stages": stages_run(result), "seconds": round(time.perf_counter() - t, 2)}
            broken = [c for c in result.verdict.checks if not c.fits and c.field in UNCHANGED_BY_DISTILLATION]
            if broken:
                reason = "; ".join(c.describe() for c in broken)
                trial.set_user_attr("rejected_by_proxy", reason)
                log.info("trial %d [%s]: rejected by the undistilled proxy, not distilled: %s", trial.number,
                         params, reason)
            else:
                trial.set_user_attr("proxy", proxy)
                result, measured = self._compress(bundle, overrides)
        else:
            result, measured = self._compress(bundle, overrides)
        self._record(trial, result, measured, bundle)
        trial.set_user_attr("reused", {kind: self.memo.hits[kind] > hits[kind] for kind in hits})
        trial.set_user_attr("seconds", round(time.perf_counter() - t, 2))
        trial.set_user_attr("cpu_seconds", round(cpu_seconds() - cpu, 2))
        self.mine.append(trial.number)
        log.info("trial %d [%s]: accuracy %.2f, %s %.2f ms, %.2f MB: %s", trial.number, params,
                 measured["accuracy"], self.latency_field, measured["latency_ms"], measured["size_objective_mb"],
                 result.verdict.summary())
        return measured["accuracy"], measured["latency_ms"], measured["size_objective_mb"]

    @staticmethod
    def _record(trial, result, measured: dict[str, float], bundle: Path) -> None:
        checks = result.verdict.checks
        trial.set_user_attr("measured", measured)
        trial.set_user_attr("stages", stages_run(result))  # what ran: a proxy-rejected trial has no distill
        trial.set_user_attr("checks", [{"field": c.field, "label": c.label, "unit": c.unit, "measured": c.measured,
                                        "limit": c.limit, "absolute": c.absolute, "reference": c.reference}
                                       for c in checks])
        for c in checks:  # the budget as Optuna constraints: relative excess, <= 0 fits
            trial.set_constraint(c.field, (c.measured - c.limit) / c.limit if c.limit else c.measured - c.limit)
        trial.set_user_attr("bundle", str(bundle.resolve()))


def measured_numbers(result, latency_field: str, size_field: str) -> dict[str, float]:
    """A compress result's numbers as a trial stores them (the budget's field names, and more)."""
    final, teacher = result.final, result.teacher
    measured = {"accuracy": final.metrics["accuracy"], "teacher_accuracy": teacher.metrics["accuracy"],
                "drop": teacher.metrics["accuracy"] - final.metrics["accuracy"],
                "size_mb": final.size.raw_bytes / MB, "zstd_mb": final.size.zstd_bytes / MB,
                "p50_ms": final.latency.p50_ms, "p95_ms": final.latency.p95_ms,
                "memory_mb": final.peak_rss_bytes / MB,
                **{k: v for k, v in final.metrics.items() if k != "accuracy"}}
    for check in result.verdict.checks:
        if check.reference is not None:  # p50<=0.1x: the ratio and the fp32 export's ms
            measured[check.field] = check.measured
            measured[check.field.replace("_ratio", "_fp32_ms")] = check.reference
    measured["latency_ms"] = measured[latency_field]
    measured["size_objective_mb"] = measured[size_field]
    return measured


def stages_run(result) -> list[str]:
    """The stages a compress run's provenance records (reused ones included)."""
    return [record["stage"] for record in result.manifest.get("provenance", [])]
