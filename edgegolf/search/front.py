"""Reading a finished (or running) study: each trial's measurements, the Pareto front, the
trial to ship, and why nothing fits when nothing does. Plain data in, text and SVG out
(the plot is edgegolf.reports' trade-off plot, as in a bundle's report)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgegolf.verdict import LimitCheck, Verdict


@dataclass(frozen=True)
class TrialRecord:
    """One completed trial, from the numbers its objective stored as user attributes."""

    number: int
    params: dict[str, Any]
    measured: dict[str, float]  # accuracy, teacher_accuracy, size_mb, zstd_mb, p50_ms, p95_ms, memory_mb
    verdict: Verdict
    bundle: str | None  # where its bundle was written (on `host`)
    host: str | None
    duplicate_of: int | None  # same parameters as an earlier trial: its numbers, not rerun
    seconds: float
    cpu_seconds: float
    reused: dict[str, bool]
    rejected_by_proxy: str | None = None  # why its undistilled proxy could not fit: it was never distilled

    @property
    def fits(self) -> bool:
        return self.verdict.fits

    @property
    def objectives(self) -> tuple[float, float, float]:
        """Accuracy (higher is better), latency and size (lower is better)."""
        return self.measured["accuracy"], self.measured["latency_ms"], self.measured["size_objective_mb"]

    def label(self) -> str:
        p = self.params
        parts = [f"layers={p['layers']}"]
        if p["heads"] < 1:
            parts.append(f"heads={p['heads']:g}")
        if p["ffn"] < 1:
            parts.append(f"ffn={p['ffn']:g}")
        if p["vocab"]:
            parts.append("vocab" if p["vocab"] == 1 else f"vocab>={p['vocab']}")
        if p.get("distill"):
            parts.append("distillation rejected by proxy" if self.rejected_by_proxy else "distilled")
        scheme = p["quantize"] + (f"/{p['int4_block_size']}" if p["quantize"] == "int4" else "")
        if p.get("embeddings", "per-row") != "per-row":  # a table stored other than in 8-bit rows
            scheme += f", {p['embeddings']} embeddings"
        return ", ".join(parts) + f"; {scheme}"


def record_from_trial(trial) -> TrialRecord | None:
    """A FrozenTrial -> TrialRecord; None for trials that measured nothing (failed, surplus)."""
    attrs = trial.user_attrs
    if "measured" not in attrs:
        return None
    checks = tuple(LimitCheck(c["field"], c["label"], c["unit"], c["measured"], c["limit"], c.get("absolute"),
                              c.get("reference")) for c in attrs["checks"])
    worker = attrs.get("worker", {})
    return TrialRecord(trial.number, dict(trial.params), dict(attrs["measured"]), Verdict(checks),
                       attrs.get("bundle"), worker.get("host"), attrs.get("duplicate_of"),
                       float(attrs.get("seconds", 0.0)), float(attrs.get("cpu_seconds", 0.0)),
                       dict(attrs.get("reused", {})), attrs.get("rejected_by_proxy"))


def dominates(a: TrialRecord, b: TrialRecord) -> bool:
    (acc_a, lat_a, size_a), (acc_b, lat_b, size_b) = a.objectives, b.objectives
    no_worse = acc_a >= acc_b and lat_a <= lat_b and size_a <= size_b
    return no_worse and (acc_a > acc_b or lat_a < lat_b or size_a < size_b)


def pareto_front(records: list[TrialRecord]) -> list[TrialRecord]:
    """Trials no other trial beats on all three objectives, most accurate first."""
    distinct = [r for r in records if r.duplicate_of is None]
    front = [r for r in distinct if not any(dominates(o, r) for o in distinct if o is not r)]
    return sorted(front, key=lambda r: (-r.objectives[0], r.objectives[1], r.objectives[2]))


def fitting_ranking(records: list[TrialRecord]) -> list[TrialRecord]:
    """Trials that fit, most accurate first; ties go to the faster, then the smaller."""
    fitting = [r for r in records if r.fits and r.duplicate_of is None]
    return sorted(fitting, key=lambda r: (-r.objectives[0], r.objectives[1], r.objectives[2], r.number))


def closest_ranking(records: list[TrialRecord]) -> list[TrialRecord]:
    """Trials by how little their worst limit is exceeded (measured/limit of the binding limit)."""
    distinct = [r for r in records if r.duplicate_of is None]
    return sorted(distinct, key=lambda r: (r.verdict.binding.usage, -r.objectives[0], r.number))


def best_fitting(records: list[TrialRecord]) -> TrialRecord | None:
    """The most accurate trial that fits; ties go to the faster, then the smaller."""
    return next(iter(fitting_ranking(records)), None)


def closest(records: list[TrialRecord]) -> TrialRecord | None:
    """The trial whose worst limit is least exceeded (smallest measured/limit of its binding limit)."""
    return next(iter(closest_ranking(records)), None)


def why_nothing_fits(records: list[TrialRecord]) -> str:
    """Which limit could not be met and by how much: the closest trial's margins, and per
    limit the best any trial reached (a limit no trial met binds whatever else is cut)."""
    near = closest(records)
    if near is None:
        return "no trial completed: nothing was measured"
    lines = [f"no trial of {len(records)} fits the budget. Binding limit: {near.verdict.binding.label} "
             f"(closest candidate, trial {near.number} [{near.label()}]: {near.verdict.binding.describe()})",
             f"closest candidate, limit by limit (trial {near.number}):"]
    lines += [f"  - {check.describe()}" for check in near.verdict.checks]
    lines.append("best any trial reached, limit by limit:")
    for index, check in enumerate(near.verdict.checks):
        best = min(records, key=lambda r: r.verdict.checks[index].measured)
        reached = best.verdict.checks[index]
        never = "" if any(r.verdict.checks[index].fits for r in records) else "  <- no trial met this limit"
        lines.append(f"  - {reached.describe()} (trial {best.number}){never}")
    return "\n".join(lines)


def markdown_front(front: list[TrialRecord], chosen: TrialRecord | None) -> str:
    header = ["trial", "settings", "accuracy", "drop", "p50 ms", "size MB", "fits", "binding limit"]
    rows = []
    for r in front:
        m = r.measured
        binding = r.verdict.binding
        rows.append([f"{r.number}{' *' if chosen is not None and r.number == chosen.number else ''}", r.label(),
                     f"{m['accuracy']:.2f}", f"{m['teacher_accuracy'] - m['accuracy']:.2f}", f"{m['p50_ms']:.2f}",
                     f"{m['size_mb']:.2f}", "yes" if r.fits else "no",
                     f"{binding.label} {binding.usage:.0%}" if binding else "-"])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def search_points(records: list[TrialRecord], front: list[TrialRecord]) -> list[dict[str, Any]]:
    """Every distinct trial as the trade-off plot needs it; the bundle's manifest keeps these
    (manifest["search"]["points"]) so `edgegolf report` draws the search beside the stages."""
    on_front = {r.number for r in front}
    return [{"number": r.number, "label": r.label(), "p50_ms": r.measured["p50_ms"], "size_mb": r.measured["size_mb"],
             "accuracy": r.measured["accuracy"], "fits": r.fits, "front": r.number in on_front}
            for r in records if r.duplicate_of is None]


def _points(records: list[TrialRecord], front: list[TrialRecord], chosen: TrialRecord | None) -> list:
    from edgegolf.reports.tradeoff import TRIAL, Point

    return [Point(f"trial {t['number']}" + (" (chosen)" if chosen is not None and t["number"] == chosen.number else ""),
                  TRIAL, t["p50_ms"], t["size_mb"], t["accuracy"], chosen=chosen is not None and t["number"] == chosen.number,
                  front=t["front"], fits=t["fits"],
                  detail=f"trial {t['number']} [{t['label']}]: {t['accuracy']:.2f} %, p50 {t['p50_ms']:.3g} ms, "
                         f"{t['size_mb']:.3g} MB; {'fits' if t['fits'] else 'misses the budget'}")
            for t in search_points(records, front)]


def svg_plot(records: list[TrialRecord], front: list[TrialRecord], chosen: TrialRecord | None,
             budget: dict[str, float], *, teacher_accuracy: float | None = None, standalone: bool = True) -> str:
    """Accuracy against p50 latency and against size: every trial a point (green fits, red
    misses), the Pareto front outlined, the chosen trial ringed, the budget drawn."""
    from edgegolf.reports.stages import plot_limits
    from edgegolf.reports.tradeoff import ACCURACY, tradeoff_svg

    limits = plot_limits(budget, teacher_accuracy, ACCURACY)
    title = f"Search: accuracy against p50 latency and size, {len(records)} completed trials"
    return tradeoff_svg(_points(records, front, chosen), limits, ACCURACY, title=title, standalone=standalone) + "\n"


def html_report(markdown: str, records: list[TrialRecord], front: list[TrialRecord], chosen: TrialRecord | None,
                budget: dict[str, float], *, teacher_accuracy: float | None = None) -> str:
    """front.md's text as one self-contained page, the plot inline under the front's table."""
    from edgegolf.reports.html import page

    plot = svg_plot(records, front, chosen, budget, teacher_accuracy=teacher_accuracy, standalone=False)
    return page(markdown, [], lead=plot)
