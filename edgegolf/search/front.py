"""Reading a finished (or running) study: each trial's measurements, the Pareto front, the
trial to ship, and why nothing fits when nothing does. Plain data in, text and SVG out."""

from __future__ import annotations

import html
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
            parts.append("distilled")
        scheme = p["quantize"] + (f"/{p['int4_block_size']}" if p["quantize"] == "int4" else "")
        return ", ".join(parts) + f"; {scheme}"


def record_from_trial(trial) -> TrialRecord | None:
    """A FrozenTrial -> TrialRecord; None for trials that measured nothing (failed, surplus)."""
    attrs = trial.user_attrs
    if "measured" not in attrs:
        return None
    checks = tuple(LimitCheck(c["field"], c["label"], c["unit"], c["measured"], c["limit"]) for c in attrs["checks"])
    worker = attrs.get("worker", {})
    return TrialRecord(trial.number, dict(trial.params), dict(attrs["measured"]), Verdict(checks),
                       attrs.get("bundle"), worker.get("host"), attrs.get("duplicate_of"),
                       float(attrs.get("seconds", 0.0)), float(attrs.get("cpu_seconds", 0.0)),
                       dict(attrs.get("reused", {})))


def dominates(a: TrialRecord, b: TrialRecord) -> bool:
    (acc_a, lat_a, size_a), (acc_b, lat_b, size_b) = a.objectives, b.objectives
    no_worse = acc_a >= acc_b and lat_a <= lat_b and size_a <= size_b
    return no_worse and (acc_a > acc_b or lat_a < lat_b or size_a < size_b)


def pareto_front(records: list[TrialRecord]) -> list[TrialRecord]:
    """Trials no other trial beats on all three objectives, most accurate first."""
    distinct = [r for r in records if r.duplicate_of is None]
    front = [r for r in distinct if not any(dominates(o, r) for o in distinct if o is not r)]
    return sorted(front, key=lambda r: (-r.objectives[0], r.objectives[1], r.objectives[2]))


def best_fitting(records: list[TrialRecord]) -> TrialRecord | None:
    """The most accurate trial that fits; ties go to the faster, then the smaller."""
    fitting = [r for r in records if r.fits and r.duplicate_of is None]
    return min(fitting, key=lambda r: (-r.objectives[0], r.objectives[1], r.objectives[2], r.number), default=None)


def closest(records: list[TrialRecord]) -> TrialRecord | None:
    """The trial whose worst limit is least exceeded (smallest measured/limit of its binding limit)."""
    distinct = [r for r in records if r.duplicate_of is None]
    return min(distinct, key=lambda r: (r.verdict.binding.usage, -r.objectives[0], r.number), default=None)


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


def svg_plot(records: list[TrialRecord], front: list[TrialRecord], chosen: TrialRecord | None,
             limits: dict[str, float], width: int = 640, height: int = 420) -> str:
    """Accuracy against latency, one dot per trial (area ~ size); front outlined, fits green."""
    points = [r for r in records if r.duplicate_of is None]
    if not points:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"></svg>\n'
    margin = 60
    xs = [r.measured["latency_ms"] for r in points] + ([limits["latency_ms"]] if "latency_ms" in limits else [])
    ys = [r.measured["accuracy"] for r in points] + ([limits["accuracy"]] if "accuracy" in limits else [])
    x0, x1 = 0.0, max(xs) * 1.1
    y0, y1 = min(ys) - 1.0, max(ys) + 1.0
    sizes = [r.measured["size_objective_mb"] for r in points]
    biggest = max(sizes) or 1.0

    def px(x: float) -> float:
        return margin + (x - x0) / (x1 - x0 or 1) * (width - 2 * margin)

    def py(y: float) -> float:
        return height - margin - (y - y0) / (y1 - y0 or 1) * (height - 2 * margin)

    on_front = {r.number for r in front}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="11">', f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<line x1="{margin}" y1="{height - margin}" x2="{width - margin}" y2="{height - margin}" stroke="black"/>',
           f'<line x1="{margin}" y1="{margin}" x2="{margin}" y2="{height - margin}" stroke="black"/>',
           f'<text x="{width / 2}" y="{height - 20}" text-anchor="middle">p50 latency (ms), measured</text>',
           f'<text x="16" y="{height / 2}" transform="rotate(-90 16 {height / 2})" text-anchor="middle">'
           f'accuracy (%), measured</text>']
    for i in range(5):
        xv, yv = x0 + (x1 - x0) * i / 4, y0 + (y1 - y0) * i / 4
        out.append(f'<text x="{px(xv):.1f}" y="{height - margin + 15}" text-anchor="middle">{xv:.2f}</text>')
        out.append(f'<text x="{margin - 5}" y="{py(yv) + 4:.1f}" text-anchor="end">{yv:.1f}</text>')
    if "latency_ms" in limits:
        x = px(limits["latency_ms"])
        out.append(f'<line x1="{x:.1f}" y1="{margin}" x2="{x:.1f}" y2="{height - margin}" stroke="red" '
                   f'stroke-dasharray="4"/><text x="{x + 3:.1f}" y="{margin + 10}" fill="red">latency limit</text>')
    if "accuracy" in limits:
        y = py(limits["accuracy"])
        out.append(f'<line x1="{margin}" y1="{y:.1f}" x2="{width - margin}" y2="{y:.1f}" stroke="red" '
                   f'stroke-dasharray="4"/><text x="{width - margin - 3}" y="{y - 3:.1f}" fill="red" '
                   f'text-anchor="end">accuracy limit</text>')
    for r in sorted(points, key=lambda r: -r.measured["size_objective_mb"]):
        radius = 3 + 9 * (r.measured["size_objective_mb"] / biggest) ** 0.5
        fill = "#2a9d4b" if r.fits else "#bbbbbb"
        stroke = ' stroke="black" stroke-width="2"' if r.number in on_front else ""
        title = html.escape(f"trial {r.number}: {r.label()}; {r.measured['size_objective_mb']:.2f} MB")
        out.append(f'<circle cx="{px(r.measured["latency_ms"]):.1f}" cy="{py(r.measured["accuracy"]):.1f}" '
                   f'r="{radius:.1f}" fill="{fill}" fill-opacity="0.8"{stroke}><title>{title}</title></circle>')
        if r.number in on_front or (chosen is not None and r.number == chosen.number):
            out.append(f'<text x="{px(r.measured["latency_ms"]) + radius + 2:.1f}" '
                       f'y="{py(r.measured["accuracy"]) + 4:.1f}">{r.number}'
                       f'{" (chosen)" if chosen is not None and r.number == chosen.number else ""}</text>')
    out.append(f'<text x="{margin}" y="20">green: fits the budget; outlined: Pareto front; '
               f'dot area ~ size (largest {biggest:.2f} MB)</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
