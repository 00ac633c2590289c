"""The reports of a compress and of a search, opened by a real browser: headless Chromium (the
Debian package `chromium`) renders each page to a PNG without error, and parses the
stand-alone SVG files as the XML they must be. Whoever changes a plot looks at the PNGs
(EDGEGOLF_SCREENSHOTS=DIR keeps them)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import edgegolf
from edgegolf.reports import bundle_reports
from edgegolf.search.front import best_fitting, html_report, markdown_front, pareto_front, svg_plot
from tests.builders.recipes import QUICK
from tests.builders.reports import TEACHER_ACCURACY, TRIALS, png_size, trial_records

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs the chromium binary (Debian/Ubuntu: apt-get install "
                                                         "chromium) to render the reports")
BUDGET = {"p50_ms": 2.5, "size_mb": 8.0, "max_accuracy_drop": 0.5}


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"  # its own profile: no state shared with other runs
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                           *args], capture_output=True, text=True, timeout=180, check=False)


def screenshot(page: Path, tmp_path: Path) -> Path:
    png = page.with_suffix(".png")
    done = _chromium(tmp_path, f"--screenshot={png}", "--window-size=1200,1800", page.as_uri())
    assert done.returncode == 0 and png.exists(), done.stderr[-2000:]
    assert png_size(png) == (1200, 1800)
    keep = os.environ.get("EDGEGOLF_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, Path(keep) / png.name)
    return png


def parsed_dom(file: Path, tmp_path: Path) -> str:
    done = _chromium(tmp_path, "--dump-dom", file.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def blank_png_bytes(tmp_path_factory) -> int:
    """A page with nothing on it, screenshotted the same way: what an empty render weighs."""
    tmp = tmp_path_factory.mktemp("blank")
    page = tmp / "blank.html"
    page.write_text("<!DOCTYPE html><html><body></body></html>", encoding="utf-8")
    return screenshot(page, tmp).stat().st_size


def test_compress_report_renders_in_chromium(tiny_classifier, tmp_path, blank_png_bytes):
    out = tmp_path / "out"
    recipe = {**QUICK, "quantize": {"scheme": "int8-dynamic"}}
    result = edgegolf.compress(str(tiny_classifier), output=out, recipe=recipe, budget="size<=0.3MB,p50<=5ms,drop<=3")
    for name, text in bundle_reports(result.manifest).items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    png = screenshot(tmp_path / "report.html", tmp_path)
    assert png.stat().st_size > 3 * blank_png_bytes  # tables and a plot, not an empty or error page
    dom = parsed_dom(tmp_path / "report.svg", tmp_path)  # the stand-alone plot is well-formed XML
    assert "parsererror" not in dom and dom.count('class="point ') == 2 * len(result.stages)


def test_search_report_renders_in_chromium(tmp_path, blank_png_bytes):
    records = trial_records("p50<=2.5ms,size<=8MB,drop<=0.5")
    front, chosen = pareto_front(records), best_fitting(records)
    text = f"# Search demo\n\n{len(records)} completed trials\n\n## Pareto front (measured)\n\n{markdown_front(front, chosen)}\n"
    (tmp_path / "front.html").write_text(html_report(text, records, front, chosen, BUDGET,
                                                     teacher_accuracy=TEACHER_ACCURACY), encoding="utf-8")
    (tmp_path / "front.svg").write_text(svg_plot(records, front, chosen, BUDGET, teacher_accuracy=TEACHER_ACCURACY),
                                        encoding="utf-8")
    png = screenshot(tmp_path / "front.html", tmp_path)
    assert png.stat().st_size > 3 * blank_png_bytes
    dom = parsed_dom(tmp_path / "front.svg", tmp_path)
    assert "parsererror" not in dom and dom.count('class="point trial') == 2 * len(TRIALS)
