"""Small SVG charts written by hand: a report page must open offline, with no script or CDN.

Each function returns one <svg> element as a string (no xmlns: inline SVG in HTML5 needs
none). Every piece of text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

import numpy as np

WIDTH, HEIGHT = 640, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 160, 30, 44  # the right margin holds the legend
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if not math.isfinite(low) or not math.isfinite(high):
        return []
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * step:
            step *= factor
            break
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)  # cover [low, high] whole
    return [round(k * step, 12) for k in range(first, last + 1)]


def _fmt(value: float) -> str:
    return f"{value:g}" if abs(value) >= 0.01 or value == 0 else f"{value:.1e}"


class _Frame:
    """Plot area with linear x and y scales, axes, ticks and a legend."""

    def __init__(self, title: str, xlabel: str, ylabel: str, xs: Sequence[float], ys: Sequence[float], *,
                 y_from_zero: bool = True):
        self.xt = nice_ticks(min(xs), max(xs)) if len(set(xs)) > 1 else [min(xs) - 1, min(xs), min(xs) + 1]
        ylow = 0.0 if y_from_zero else min(ys)
        self.yt = nice_ticks(ylow, max(ys) if max(ys) > ylow else ylow + 1)
        self.x0, self.x1 = self.xt[0], self.xt[-1]
        self.y0, self.y1 = self.yt[0], self.yt[-1]
        self.parts = [f'<svg class="plot" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
                      f'role="img" aria-label="{escape(title)}">',
                      f"<title>{escape(title)}</title>",
                      f'<text x="{WIDTH / 2:.0f}" y="18" text-anchor="middle" font-size="14">{escape(title)}</text>']
        right, bottom = WIDTH - RIGHT, HEIGHT - BOTTOM
        self.parts.append(f'<rect x="{LEFT}" y="{TOP}" width="{right - LEFT}" height="{bottom - TOP}" '
                          'fill="none" stroke="#888"/>')
        for t in self.xt:
            x = self.sx(t)
            self.parts.append(f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#888"/>'
                              f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" font-size="11">{_fmt(t)}</text>')
        for t in self.yt:
            y = self.sy(t)
            self.parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#eee"/>'
                              f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{_fmt(t)}</text>')
        self.parts.append(f'<text x="{(LEFT + right) / 2:.0f}" y="{HEIGHT - 8}" text-anchor="middle" '
                          f'font-size="12">{escape(xlabel)}</text>')
        self.parts.append(f'<text x="14" y="{(TOP + bottom) / 2:.0f}" text-anchor="middle" font-size="12" '
                          f'transform="rotate(-90 14 {(TOP + bottom) / 2:.0f})">{escape(ylabel)}</text>')
        self.legend = 0

    def sx(self, x: float) -> float:
        return LEFT + (x - self.x0) / ((self.x1 - self.x0) or 1) * (WIDTH - RIGHT - LEFT)

    def sy(self, y: float) -> float:
        return HEIGHT - BOTTOM - (y - self.y0) / ((self.y1 - self.y0) or 1) * (HEIGHT - BOTTOM - TOP)

    def add_legend(self, label: str, color: str) -> None:
        y = TOP + 8 + 16 * self.legend
        x = WIDTH - RIGHT + 10
        self.parts.append(f'<rect x="{x}" y="{y - 8}" width="10" height="10" fill="{color}"/>'
                          f'<text x="{x + 14}" y="{y + 1}" font-size="11">{escape(label[:24])}</text>')
        self.legend += 1

    def svg(self) -> str:
        return "".join(self.parts) + "</svg>"


def histogram(title: str, series: Sequence[tuple[str, Sequence[float]]], *, unit: str = "ms", bins: int = 30) -> str:
    """Overlaid step histograms on shared bins (share of runs per bin, so sizes compare)."""
    series = [(label, np.asarray(values, dtype=float)) for label, values in series if len(values)]
    allv = np.concatenate([v for _, v in series])
    low, high = float(np.percentile(allv, 0.5)), float(np.percentile(allv, 99.5))
    if high <= low:
        low, high = low * 0.95, high * 1.05 + 1e-9
    edges = np.linspace(low, high, bins + 1)
    shares = [np.histogram(np.clip(v, low, high), bins=edges)[0] / v.size for _, v in series]
    frame = _Frame(title, f"latency ({unit})", "share of runs", [low, high], [0.0, float(max(s.max() for s in shares))])
    for i, ((label, values), share) in enumerate(zip(series, shares)):
        color = COLORS[i % len(COLORS)]
        points = [f"{frame.sx(edges[0]):.1f},{frame.sy(0):.1f}"]
        for j, h in enumerate(share):
            points += [f"{frame.sx(edges[j]):.1f},{frame.sy(h):.1f}", f"{frame.sx(edges[j + 1]):.1f},{frame.sy(h):.1f}"]
        points.append(f"{frame.sx(edges[-1]):.1f},{frame.sy(0):.1f}")
        frame.parts.append(f'<polyline class="series" fill="none" stroke="{color}" stroke-width="1.5" '
                           f'points="{" ".join(points)}"/>')
        frame.add_legend(f"{label} (p50 {np.median(values):.3g} {unit})", color)
    return frame.svg()


def lines(title: str, xlabel: str, ylabel: str, series: Sequence[tuple[str, Sequence[float], Sequence[float]]]) -> str:
    """One polyline with markers per series."""
    xs = [x for _, sx, _ in series for x in sx]
    ys = [y for _, _, sy in series for y in sy]
    frame = _Frame(title, xlabel, ylabel, xs, ys)
    for i, (label, sx, sy) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        pts = [(frame.sx(x), frame.sy(y)) for x, y in zip(sx, sy)]
        frame.parts.append(f'<polyline class="series" fill="none" stroke="{color}" stroke-width="2" '
                           f'points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in pts)}"/>')
        frame.parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in pts]
        frame.add_legend(label, color)
    return frame.svg()
