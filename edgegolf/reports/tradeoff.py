"""The trade-off plot: quality (accuracy, or bits/byte for a causal LM) against p50 latency
in one panel and against size in the other; one point per pipeline stage and per search
trial; the budget's limits drawn as lines with the region that fits them shaded; the chosen
bundle ringed. Hand-written SVG: a report page must open offline, with no script or URL.

Axes start where the data does (padded), not at zero, so 95.65% and 95.95% are told apart.
A limit far outside the data (size <= 50 MB for a 0.1 MB model) is not allowed to squash the
points into a corner: it is named in the caption instead of drawn.

Every drawn element carries its values as data-* attributes and every panel its axis ranges,
so a test can check that each pixel is where its value maps to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from edgegolf.reports.svg import nice_ticks

WIDTH, HEIGHT = 980, 470  # the height grows with the legend's rows and the caption
PANEL_W, PANEL_H, PANEL_TOP = 380, 320, 48
PANEL_LEFTS = (76, 576)
PAD = 0.08  # share of the data's span added on each side of an axis
NEAR = 1.0  # a limit within this many data spans of the data is drawn (and widens the axis)

TEACHER, STAGE, REFERENCE, TRIAL = "teacher", "stage", "reference", "trial"
COLORS = {TEACHER: "#444444", STAGE: "#1f77b4", REFERENCE: "#9467bd", "fits": "#2a9d4b", "misses": "#c0392b",
          "limit": "#d62728", "chosen": "#ff7f0e", "feasible": "#2a9d4b"}


@dataclass(frozen=True)
class Point:
    label: str
    kind: str  # TEACHER | STAGE | REFERENCE | TRIAL
    latency_ms: float
    size_mb: float
    quality: float
    chosen: bool = False
    front: bool = False  # on the search's Pareto front
    fits: bool | None = None  # a trial's verdict; None for stages
    detail: str = ""  # shown on hover


@dataclass(frozen=True)
class Quality:
    label: str
    higher_is_better: bool = True


ACCURACY = Quality("accuracy (%)")
BITS_PER_BYTE = Quality("bits/byte (lower is better: drawn upward)", higher_is_better=False)


@dataclass(frozen=True)
class Limits:
    """The budget's limits this plot can draw, and a line for each it cannot."""

    latency_ms: float | None = None  # p50
    size_mb: float | None = None
    quality: float | None = None  # the worst quality the budget accepts
    quality_text: str = ""  # how `quality` follows from the budget (e.g. teacher minus the drop)
    not_drawn: tuple[str, ...] = ()


class Axis:
    """A linear scale from values to pixels over the data's padded range."""

    def __init__(self, values: Sequence[float], limit: float | None, px_from: float, px_to: float):
        low, high = min(values), max(values)
        span = high - low or (abs(high) * 0.1 or 1.0)
        self.limit_shown = limit is not None and low - NEAR * span <= limit <= high + NEAR * span
        if self.limit_shown:
            low, high = min(low, limit), max(high, limit)
        span = high - low or (abs(high) * 0.1 or 1.0)
        self.v0, self.v1 = low - PAD * span, high + PAD * span
        if min(values) >= 0 and self.v0 < 0 and (limit is None or limit >= 0):
            self.v0 = 0.0  # sizes and latencies are never negative: padding stops at zero
        if high == low:  # one value: centre it
            self.v0, self.v1 = low - span / 2, low + span / 2
        self.px_from, self.px_to = px_from, px_to

    def px(self, value: float) -> float:
        return self.px_from + (value - self.v0) / (self.v1 - self.v0) * (self.px_to - self.px_from)

    def ticks(self) -> list[float]:
        return [t for t in nice_ticks(self.v0, self.v1) if self.v0 <= t <= self.v1]


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _quality_axis(points: Sequence[Point], limits: Limits, quality: Quality) -> Axis:
    top, bottom = PANEL_TOP, PANEL_TOP + PANEL_H
    # better is up: for bits/byte (lower is better) the smallest value is drawn at the top
    ends = (bottom, top) if quality.higher_is_better else (top, bottom)
    return Axis([p.quality for p in points], limits.quality, *ends)


def _feasible_span(axis: Axis, limit: float | None, lower_is_better: bool) -> tuple[float, float] | None:
    """The value range on this axis that meets the limit; None when none of the axis does."""
    if limit is None:
        return axis.v0, axis.v1
    if lower_is_better:
        return (axis.v0, min(limit, axis.v1)) if limit >= axis.v0 else None
    return (max(limit, axis.v0), axis.v1) if limit <= axis.v1 else None


def _panel(points: Sequence[Point], limits: Limits, quality: Quality, y: Axis, index: int) -> list[str]:
    field, unit, limit = (("latency_ms", "ms", limits.latency_ms) if index == 0 else ("size_mb", "MB", limits.size_mb))
    xlabel = "p50 latency (ms), measured" if index == 0 else "size (MB), measured"
    left = PANEL_LEFTS[index]
    top, bottom, right = PANEL_TOP, PANEL_TOP + PANEL_H, PANEL_LEFTS[index] + PANEL_W
    x = Axis([getattr(p, field) for p in points], limit, left, right)
    value_of = {p: getattr(p, field) for p in points}
    out = [f'<g class="panel" data-x-field="{field}" data-x0="{x.v0!r}" data-x1="{x.v1!r}" data-y0="{y.v0!r}" '
           f'data-y1="{y.v1!r}" data-y-up="{"higher" if quality.higher_is_better else "lower"}">',
           f'<rect class="plot-area" x="{left}" y="{top}" width="{PANEL_W}" height="{PANEL_H}" fill="#ffffff" '
           f'stroke="#888888"/>']
    # the region that meets every limit this panel can show
    drawn_limit = (limit is not None) or (limits.quality is not None)
    xs = _feasible_span(x, limit, lower_is_better=True)
    ys = _feasible_span(y, limits.quality, lower_is_better=not quality.higher_is_better)
    if drawn_limit and xs and ys:
        x_a, x_b = sorted((x.px(xs[0]), x.px(xs[1])))
        y_a, y_b = sorted((y.px(ys[0]), y.px(ys[1])))
        out.append(f'<rect class="feasible" x="{x_a:.2f}" y="{y_a:.2f}" width="{x_b - x_a:.2f}" '
                   f'height="{y_b - y_a:.2f}" fill="{COLORS["feasible"]}" fill-opacity="0.10"/>')
    for t in x.ticks():
        px = x.px(t)
        out.append(f'<line x1="{px:.2f}" y1="{top}" x2="{px:.2f}" y2="{bottom}" stroke="#eeeeee"/>'
                   f'<text x="{px:.2f}" y="{bottom + 16}" text-anchor="middle" font-size="11">{_fmt(t)}</text>')
    for t in y.ticks():
        py = y.px(t)
        out.append(f'<line x1="{left}" y1="{py:.2f}" x2="{right}" y2="{py:.2f}" stroke="#eeeeee"/>'
                   f'<text x="{left - 6}" y="{py + 4:.2f}" text-anchor="end" font-size="11">{_fmt(t)}</text>')
    out.append(f'<text x="{(left + right) / 2:.0f}" y="{bottom + 36}" text-anchor="middle" font-size="12">'
               f'{escape(xlabel)}</text>')
    mid = (top + bottom) / 2
    out.append(f'<text x="{left - 52}" y="{mid:.0f}" text-anchor="middle" font-size="12" '
               f'transform="rotate(-90 {left - 52} {mid:.0f})">{escape(quality.label)}</text>')
    if limit is not None and x.limit_shown:
        px = x.px(limit)
        name = "p50_ms" if index == 0 else "size_mb"
        out.append(f'<line class="limit" data-field="{name}" data-value="{limit!r}" x1="{px:.2f}" y1="{top}" '
                   f'x2="{px:.2f}" y2="{bottom}" stroke="{COLORS["limit"]}" stroke-width="1.5" stroke-dasharray="6 4"/>'
                   f'<text x="{px + 4:.2f}" y="{top + 12}" font-size="11" fill="{COLORS["limit"]}">'
                   f'{"p50" if index == 0 else "size"} &lt;= {_fmt(limit)} {unit}</text>')
    if limits.quality is not None and y.limit_shown:
        py = y.px(limits.quality)
        out.append(f'<line class="limit" data-field="quality" data-value="{limits.quality!r}" x1="{left}" '
                   f'y1="{py:.2f}" x2="{right}" y2="{py:.2f}" stroke="{COLORS["limit"]}" stroke-width="1.5" '
                   f'stroke-dasharray="6 4"/><text x="{right - 4}" y="{py - 4:.2f}" text-anchor="end" font-size="11" '
                   f'fill="{COLORS["limit"]}">{escape(limits.quality_text or _fmt(limits.quality))}</text>')
    # the chain's stages joined in pipeline order: the path the model took
    chain = [p for p in points if p.kind in (TEACHER, STAGE)]
    if len(chain) > 1:
        path = " ".join(f"{x.px(value_of[p]):.2f},{y.px(p.quality):.2f}" for p in chain)
        out.append(f'<polyline class="chain" points="{path}" fill="none" stroke="{COLORS[STAGE]}" '
                   f'stroke-opacity="0.5" stroke-width="1.5"/>')
    trials = sorted((p for p in points if p.kind == TRIAL), key=lambda p: p.front)  # the front drawn on top
    for p in trials:
        color = COLORS["fits" if p.fits else "misses"]
        stroke = ' stroke="#000000" stroke-width="1.5"' if p.front else ""
        out.append(f'<circle class="point trial{" front" if p.front else ""}" data-label="{escape(p.label)}" '
                   f'data-x="{value_of[p]!r}" data-y="{p.quality!r}" cx="{x.px(value_of[p]):.2f}" '
                   f'cy="{y.px(p.quality):.2f}" r="{5 if p.front else 3.5}" fill="{color}" '
                   f'fill-opacity="{0.85 if p.front else 0.45}"{stroke}><title>{escape(p.detail or p.label)}</title>'
                   '</circle>')
    labels = _Labels(left, top, right, bottom, [(x.px(value_of[p]), y.px(p.quality)) for p in points])
    for p in points:
        if p.chosen:  # its ring is wider than the point
            cx, cy = x.px(value_of[p]), y.px(p.quality)
            labels.taken.append((cx - 13, cy - 13, cx + 13, cy + 13))
    if limit is not None and x.limit_shown:  # the limit lines' own labels
        labels.taken.append((x.px(limit) + 2, top, x.px(limit) + 110, top + 16))
    if limits.quality is not None and y.limit_shown:
        text = limits.quality_text or _fmt(limits.quality)
        labels.taken.append((right - 4 - 6.4 * len(text), y.px(limits.quality) - 16, right, y.px(limits.quality)))
    for p in (p for p in points if p.kind != TRIAL):
        cx, cy = x.px(value_of[p]), y.px(p.quality)
        fill = "#ffffff" if p.kind == REFERENCE else COLORS[p.kind]
        out.append(f'<circle class="point {p.kind}" data-label="{escape(p.label)}" data-x="{value_of[p]!r}" '
                   f'data-y="{p.quality!r}" cx="{cx:.2f}" cy="{cy:.2f}" r="6" fill="{fill}" stroke="{COLORS[p.kind]}" '
                   f'stroke-width="2"><title>{escape(p.detail or p.label)}</title></circle>')
        out.append(labels.place(p.label, cx, cy, COLORS[p.kind]))
    for p in (p for p in trials if p.front or p.chosen):
        out.append(labels.place(p.label, x.px(value_of[p]), y.px(p.quality), "#333333", size=10))
    for p in points:
        if p.chosen:
            cx, cy = x.px(value_of[p]), y.px(p.quality)
            out.append(f'<circle class="chosen" data-label="{escape(p.label)}" cx="{cx:.2f}" cy="{cy:.2f}" r="11" '
                       f'fill="none" stroke="{COLORS["chosen"]}" stroke-width="3"><title>the chosen bundle: '
                       f'{escape(p.label)}</title></circle>')
    if limit is not None and not x.limit_shown:
        side = "right" if limit > x.v1 else "left"
        out.append(f'<text class="limit-off-axis" x="{right - 4 if side == "right" else left + 4}" y="{top + 14}" '
                   f'text-anchor="{"end" if side == "right" else "start"}" font-size="11" fill="{COLORS["limit"]}">'
                   f'{"p50" if index == 0 else "size"} limit {_fmt(limit)} {unit}: far {side} of the data '
                   f'{"→" if side == "right" else "←"}</text>')
    out.append("</g>")
    return out


class _Labels:
    """Places point labels where they overlap neither other labels nor points, inside the
    plot area: stages of one model often sit close together (fp32 and optimized, say)."""

    OFFSETS = ((9, -7, "start"), (9, 15, "start"), (-9, -7, "end"), (-9, 15, "end"), (0, -12, "middle"),
               (0, 22, "middle"), (9, -19, "start"), (9, 27, "start"), (-9, -19, "end"), (-9, 27, "end"))

    def __init__(self, left: float, top: float, right: float, bottom: float, points: list[tuple[float, float]]):
        self.area = (left + 2, top + 2, right - 2, bottom - 2)
        self.taken = [(px - 5, py - 5, px + 5, py + 5) for px, py in points]

    def place(self, text: str, px: float, py: float, color: str, size: int = 11) -> str:
        width, height = 0.58 * size * len(text), size
        candidates = []
        for dx, dy, anchor in self.OFFSETS:
            x0 = px + dx - (width if anchor == "end" else width / 2 if anchor == "middle" else 0)
            box = (x0, py + dy - height + 2, x0 + width, py + dy + 2)
            inside = box[0] >= self.area[0] and box[1] >= self.area[1] and box[2] <= self.area[2] and box[3] <= self.area[3]
            clashes = sum(_overlap(box, other) for other in self.taken)
            candidates.append((not inside, clashes, len(candidates), box, dx, dy, anchor))
        _, _, _, box, dx, dy, anchor = min(candidates)
        self.taken.append(box)
        return (f'<text class="label" x="{px + dx:.2f}" y="{py + dy:.2f}" text-anchor="{anchor}" font-size="{size}" '
                f'fill="{color}">{escape(text)}</text>')


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _legend(points: Sequence[Point], y0: float) -> tuple[list[str], float]:
    """Symbol and meaning of each kind of mark shown, in rows; returns the last row's y too."""
    kinds = {p.kind for p in points}
    items = []
    if TEACHER in kinds or STAGE in kinds:
        items.append((f'<circle r="6" fill="{COLORS[STAGE]}" stroke="{COLORS[STAGE]}" stroke-width="2"/>',
                      "pipeline stage (joined in pipeline order; teacher dark)"))
    if REFERENCE in kinds:
        items.append((f'<circle r="6" fill="#ffffff" stroke="{COLORS[REFERENCE]}" stroke-width="2"/>', "reference"))
    if any(p.kind == TRIAL and p.fits for p in points):
        items.append((f'<circle r="3.5" fill="{COLORS["fits"]}" fill-opacity="0.45"/>', "search trial that fits"))
    if any(p.kind == TRIAL and not p.fits for p in points):
        items.append((f'<circle r="3.5" fill="{COLORS["misses"]}" fill-opacity="0.45"/>', "search trial that misses"))
    if TRIAL in kinds:
        if any(p.front for p in points):
            items.append(('<circle r="5" fill="#888888" stroke="#000000" stroke-width="1.5"/>', "Pareto front"))
    if any(p.chosen for p in points):
        items.append((f'<circle r="9" fill="none" stroke="{COLORS["chosen"]}" stroke-width="3"/>', "the chosen bundle"))
    items.append((f'<rect x="-7" y="-7" width="14" height="14" fill="{COLORS["feasible"]}" fill-opacity="0.2" '
                  f'stroke="{COLORS["limit"]}" stroke-dasharray="3 2"/>', "budget limit; shaded: fits"))
    out, x, y = [], PANEL_LEFTS[0], y0
    for symbol, text in items:
        width = 30 + 5.7 * len(text)
        if x + width > WIDTH - 10:
            x, y = PANEL_LEFTS[0], y + 20
        out.append(f'<g transform="translate({x + 8:.0f} {y:.0f})">{symbol}</g>'
                   f'<text x="{x + 20:.0f}" y="{y + 4:.0f}" font-size="11">{escape(text)}</text>')
        x += width
    return out, y


def tradeoff_svg(points: Sequence[Point], limits: Limits, quality: Quality = ACCURACY, *, title: str,
                 standalone: bool = False) -> str:
    """Two panels (quality against p50 latency, and against size) sharing the quality axis.
    `standalone` adds the xmlns a separate .svg file needs (inline SVG in HTML needs none)."""
    points = [p for p in points if all(math.isfinite(v) for v in (p.latency_ms, p.size_mb, p.quality))]
    ns = ' xmlns="http://www.w3.org/2000/svg"' if standalone else ""

    def head(height: float) -> str:
        return (f'<svg{ns} class="plot tradeoff" width="{WIDTH}" height="{height:.0f}" viewBox="0 0 {WIDTH} '
                f'{height:.0f}" role="img" aria-label="{escape(title)}" font-family="system-ui, sans-serif">'
                f'<title>{escape(title)}</title><rect width="{WIDTH}" height="{height:.0f}" fill="#ffffff"/>'
                f'<text x="{WIDTH / 2:.0f}" y="22" text-anchor="middle" font-size="15">{escape(title)}</text>')

    if not points:
        return head(HEIGHT) + (f'<text x="{WIDTH / 2:.0f}" y="{HEIGHT / 2:.0f}" text-anchor="middle">nothing measured'
                               "</text></svg>")
    y = _quality_axis(points, limits, quality)
    parts = []
    for index in (0, 1):
        parts += _panel(points, limits, quality, y, index)
    legend, last_row = _legend(points, PANEL_TOP + PANEL_H + 62)
    parts += legend
    bottom = last_row + 14
    notes = list(limits.not_drawn)
    if limits.quality is not None and not y.limit_shown:
        notes.append(f"{limits.quality_text or 'quality limit ' + _fmt(limits.quality)}: far outside the data")
    if notes:
        bottom += 14
        parts.append(f'<text class="caption" x="{PANEL_LEFTS[0]}" y="{bottom:.0f}" font-size="11" fill="#555555">'
                     f'{escape("Not drawn: " + "; ".join(notes))}</text>')
    return head(bottom + 12) + "".join(parts) + "</svg>"
