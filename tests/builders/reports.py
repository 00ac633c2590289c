"""Inputs for the report tests, built cheaply: a real compress of a tiny model (its manifest),
a search's trial records (edgegolf.search.front's own data structures), and a reader that
turns a trade-off SVG back into numbers."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from edgegolf.recipe import Budget
from edgegolf.search.front import TrialRecord
from edgegolf.verdict import check_budget

TEACHER_ACCURACY = 96.10
# (p50 ms, size MB, accuracy %): a spread like a real search's, with two trials 0.3 points
# apart (95.65 and 95.95) that a plot from zero would draw at the same height
TRIALS = [(4.1, 22.9, 96.05), (2.3, 6.1, 95.95), (1.9, 5.9, 95.65), (1.2, 3.4, 94.80), (3.0, 12.2, 95.90),
          (0.9, 2.1, 92.10), (2.6, 6.0, 95.10), (1.4, 3.3, 95.20), (5.2, 23.0, 96.08)]


def trial_records(budget: str) -> list[TrialRecord]:
    """The TRIALS as completed trials of a study, each with its verdict against `budget`."""
    limits = Budget.parse(budget)
    records = []
    for number, (p50, size, accuracy) in enumerate(TRIALS):
        measured = {"accuracy": accuracy, "teacher_accuracy": TEACHER_ACCURACY, "size_mb": size, "zstd_mb": size * 0.8,
                    "p50_ms": p50, "p95_ms": p50 * 1.3, "memory_mb": 80.0 + size, "latency_ms": p50,
                    "size_objective_mb": size}
        verdict = check_budget(limits, {**measured, "max_accuracy_drop": TEACHER_ACCURACY - accuracy})
        params = {"layers": 6 - number % 3, "heads": 1.0, "ffn": 1.0 if number % 2 else 0.5, "vocab": 0,
                  "quantize": "int4" if number % 3 == 2 else "default", "int4_block_size": 32}
        records.append(TrialRecord(number, params, measured, verdict, None, None, None, 1.0, 1.0, {}))
    return records


@dataclass
class Panel:
    field: str  # the x axis: latency_ms or size_mb
    x0: float
    x1: float
    y0: float
    y1: float
    higher_up: bool  # the larger quality is drawn higher
    area: tuple[float, float, float, float]  # left, top, width, height of the plot area (pixels)
    element: ET.Element

    def px(self, value: float) -> float:
        left, _, width, _ = self.area
        return left + (value - self.x0) / (self.x1 - self.x0) * width

    def py(self, value: float) -> float:
        _, top, _, height = self.area
        share = (value - self.y0) / (self.y1 - self.y0)
        return top + height - share * height if self.higher_up else top + share * height

    def inside(self, x: float, y: float) -> bool:
        left, top, width, height = self.area
        return left <= x <= left + width and top <= y <= top + height

    def find(self, css_class: str) -> list[ET.Element]:
        return [e for e in self.element.iter() if css_class in (e.get("class") or "").split()]


def tradeoff_svgs(text: str) -> list[ET.Element]:
    """Every trade-off <svg> in an HTML page or an .svg file, parsed, namespaces dropped."""
    found = re.findall(r"<svg[^>]*class=\"plot tradeoff\".*?</svg>", text, flags=re.DOTALL)
    roots = []
    for svg in found:
        root = ET.fromstring(svg)
        for element in root.iter():
            element.tag = element.tag.split("}")[-1]
        roots.append(root)
    return roots


def panels(svg: ET.Element) -> list[Panel]:
    out = []
    for g in svg.iter("g"):
        if g.get("class") != "panel":
            continue
        rect = next(e for e in g if e.get("class") == "plot-area")
        area = tuple(float(rect.get(k)) for k in ("x", "y", "width", "height"))
        out.append(Panel(g.get("data-x-field"), float(g.get("data-x0")), float(g.get("data-x1")),
                         float(g.get("data-y0")), float(g.get("data-y1")), g.get("data-y-up") == "higher", area, g))
    return out


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (and proof the file is a PNG)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
