"""The trade-off plot read back as geometry: every point inside its plot and at the pixel its
values map to, the budget's lines at their values, the chosen bundle ringed, axes that start
where the data does; and report.md / `edgegolf report` rendered from the manifest."""

from __future__ import annotations

import copy
import json

import pytest

import edgegolf
from edgegolf.reports import (
    bundle_reports,
    bundle_section,
    bundle_view,
    markdown_from_manifest,
    new_document,
    render_html,
    render_markdown,
    tradeoff_plot,
    validate,
)
from edgegolf.reports.stages import stage_rows, table_columns
from edgegolf.reports.tradeoff import ACCURACY, BITS_PER_BYTE, STAGE, TEACHER, Limits, Point, tradeoff_svg
from edgegolf.search.front import best_fitting, html_report, pareto_front, svg_plot
from tests.builders.cli import run_cli
from tests.builders.recipes import QUICK
from tests.builders.reports import TEACHER_ACCURACY, TRIALS, panels, tradeoff_svgs, trial_records

PIPELINE = ["teacher", "onnx-fp32", "onnx-optimized", "quantized"]
SEARCH_BUDGET = "p50<=2.5ms,size<=8MB,drop<=0.5"


@pytest.fixture(scope="module")
def compressed(tiny_classifier, tmp_path_factory):
    """A real compress of a tiny classifier, with a reference stage measured beside the chain."""
    out = tmp_path_factory.mktemp("report") / "out"
    recipe = {**QUICK, "quantize": {"scheme": "int8-dynamic"},
              "evaluate": {**QUICK["evaluate"], "compare": ["ort-quantize-dynamic"]}}
    return edgegolf.compress(str(tiny_classifier), output=out, recipe=recipe, budget="size<=50MB,drop<=100")


def _within_budget(manifest: dict) -> dict:
    """The manifest with a budget whose limits lie inside the measured data, so every line is drawn."""
    stages = manifest["stages"]
    p50s = sorted(s["latency"]["p50_ms"] for s in stages.values())
    sizes = sorted(s["size_bytes"] / 1e6 for s in stages.values())
    tight = copy.deepcopy(manifest)
    tight["budget"] = {"p50_ms": (p50s[0] + p50s[-1]) / 2, "size_mb": (sizes[0] + sizes[-1]) / 2,
                       "max_accuracy_drop": 1.0}
    return tight


def _check_points(svg, expected_labels: set[str]) -> int:
    """Every point inside its panel's plot area, at the pixel its data-x/data-y values map to."""
    checked = 0
    for panel in panels(svg):
        labels = set()
        for point in panel.find("point"):
            x, y = float(point.get("cx")), float(point.get("cy"))
            assert panel.inside(x, y), (panel.field, point.get("data-label"), x, y, panel.area)
            assert x == pytest.approx(panel.px(float(point.get("data-x"))), abs=0.01)
            assert y == pytest.approx(panel.py(float(point.get("data-y"))), abs=0.01)
            labels.add(point.get("data-label"))
            checked += 1
        assert labels == expected_labels, panel.field
    return checked


def test_compress_plot_has_every_stage_in_its_place_and_the_bundle_ringed(compressed):
    view = bundle_view(compressed.manifest)
    (svg,) = tradeoff_svgs(tradeoff_plot(view, standalone=True))
    names = [s.name for s in compressed.stages]
    assert _check_points(svg, set(names)) == 2 * len(names)
    for panel in panels(svg):
        assert panel.field in ("latency_ms", "size_mb")
        # the chain is joined in pipeline order, the reference is not on it
        (chain,) = panel.find("chain")
        by_label = {p.get("data-label"): (float(p.get("cx")), float(p.get("cy"))) for p in panel.find("point")}
        path = [tuple(map(float, pair.split(","))) for pair in chain.get("points").split()]
        assert path == [pytest.approx(by_label[name], abs=0.01) for name in PIPELINE]
        # the chosen bundle is the last stage of the chain
        (ring,) = panel.find("chosen")
        assert ring.get("data-label") == "quantized"
        assert (float(ring.get("cx")), float(ring.get("cy"))) == pytest.approx(by_label["quantized"], abs=0.01)
        # axes start where the data does: the smallest value sits near the left edge, not at a zero far away
        values = [float(p.get("data-x")) for p in panel.find("point")]
        span = max(values) - min(values)
        assert panel.x0 <= min(values) and min(values) - panel.x0 <= 0.1 * span + 1e-9
        assert panel.x1 >= max(values) and panel.x1 - max(values) <= 0.1 * span + 1e-9
    # size<=50MB and drop<=100 lie far outside a 0.3 MB model's data: named, not drawn
    assert not [e for e in svg.iter() if e.get("class") == "limit"]
    off = [e.text for e in svg.iter() if e.get("class") == "limit-off-axis"]
    assert off == ["size limit 50 MB: far right of the data →"]
    (caption,) = [e.text for e in svg.iter() if e.get("class") == "caption"]
    assert "accuracy >= " in caption and "far outside the data" in caption


def test_budget_lines_sit_at_their_values_and_the_shaded_region_meets_them(compressed):
    tight = _within_budget(compressed.manifest)
    (svg,) = tradeoff_svgs(tradeoff_plot(bundle_view(tight)))
    teacher = compressed.manifest["stages"]["teacher"]["metrics"]["accuracy"]
    floor = teacher - 1.0
    for panel in panels(svg):
        lines = {e.get("data-field"): e for e in panel.find("limit")}
        x_field = "p50_ms" if panel.field == "latency_ms" else "size_mb"
        assert set(lines) == {x_field, "quality"}
        vertical, horizontal = lines[x_field], lines["quality"]
        assert float(vertical.get("data-value")) == pytest.approx(tight["budget"][x_field])
        assert float(vertical.get("x1")) == float(vertical.get("x2")) == pytest.approx(
            panel.px(tight["budget"][x_field]), abs=0.01)
        assert float(horizontal.get("data-value")) == pytest.approx(floor)
        assert float(horizontal.get("y1")) == float(horizontal.get("y2")) == pytest.approx(panel.py(floor), abs=0.01)
        # the feasible box: from the left edge to the limit, from the accuracy floor up
        (box,) = panel.find("feasible")
        left, top, _, _ = panel.area
        assert float(box.get("x")) == pytest.approx(left, abs=0.01)
        assert float(box.get("x")) + float(box.get("width")) == pytest.approx(panel.px(tight["budget"][x_field]), abs=0.02)
        assert float(box.get("y")) == pytest.approx(top, abs=0.01)
        assert float(box.get("y")) + float(box.get("height")) == pytest.approx(panel.py(floor), abs=0.02)


def test_close_accuracies_are_told_apart_and_bits_per_byte_is_better_upward():
    points = [Point("teacher", TEACHER, 9.0, 90.0, 95.95), Point("quantized", STAGE, 3.0, 23.0, 95.65, chosen=True)]
    (svg,) = tradeoff_svgs(tradeoff_svg(points, Limits(), ACCURACY, title="t"))
    for panel in panels(svg):
        assert 95.0 < panel.y0 < 95.65 and 95.95 < panel.y1 < 96.5  # not from zero
        ys = {p.get("data-label"): float(p.get("cy")) for p in panel.find("point")}
        assert ys["quantized"] - ys["teacher"] > 200  # 0.3 points apart: most of the plot's height
    # bits/byte: lower is better, so the smaller value is drawn higher (smaller y pixel)
    points = [Point("teacher", TEACHER, 9.0, 90.0, 1.10), Point("quantized", STAGE, 3.0, 23.0, 1.25, chosen=True)]
    (svg,) = tradeoff_svgs(tradeoff_svg(points, Limits(), BITS_PER_BYTE, title="t"))
    for panel in panels(svg):
        assert not panel.higher_up
        ys = {p.get("data-label"): float(p.get("cy")) for p in panel.find("point")}
        assert ys["teacher"] < ys["quantized"]
        _check_points(svg, {"teacher", "quantized"})


def test_search_plot_draws_every_trial_and_highlights_the_front():
    records = trial_records(SEARCH_BUDGET)
    front, chosen = pareto_front(records), best_fitting(records)
    assert chosen is not None and chosen.number == 1  # 95.95 %, 2.3 ms, 6.1 MB: the most accurate that fits
    text = svg_plot(records, front, chosen, {"p50_ms": 2.5, "size_mb": 8.0, "max_accuracy_drop": 0.5},
                    teacher_accuracy=TEACHER_ACCURACY)
    assert text.startswith('<svg xmlns="http://www.w3.org/2000/svg"')
    (svg,) = tradeoff_svgs(text)
    labels = {f"trial {n}" + (" (chosen)" if n == chosen.number else "") for n in range(len(TRIALS))}
    assert _check_points(svg, labels) == 2 * len(TRIALS)
    for panel in panels(svg):
        on_front = {int(p.get("data-label").split()[1]) for p in panel.find("front")}
        assert on_front == {r.number for r in front} and 0 < len(on_front) < len(TRIALS)
        fills = {int(p.get("data-label").split()[1]): p.get("fill") for p in panel.find("trial")}
        assert {n for n, fill in fills.items() if fill == "#2a9d4b"} == {r.number for r in records if r.fits}
        (ring,) = panel.find("chosen")
        x, y = TRIALS[chosen.number][0 if panel.field == "latency_ms" else 1], TRIALS[chosen.number][2]
        assert (float(ring.get("cx")), float(ring.get("cy"))) == pytest.approx((panel.px(x), panel.py(y)), abs=0.01)
        lines = {e.get("data-field"): float(e.get("data-value")) for e in panel.find("limit")}
        assert lines == {("p50_ms" if panel.field == "latency_ms" else "size_mb"): 2.5 if panel.field == "latency_ms"
                         else 8.0, "quality": pytest.approx(TEACHER_ACCURACY - 0.5)}
        assert panel.y0 > 91.0  # the least accurate trial (92.10) starts the axis, padded
    page = html_report("# Search s\n\n| a |\n|---|\n| 1 |\n", records, front, chosen, {"p50_ms": 2.5})
    assert "<script" not in page and "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert len(tradeoff_svgs(page)) == 1


def test_report_md_is_rendered_from_the_manifest_in_pipeline_order(compressed):
    manifest = compressed.manifest
    report = (compressed.output / "report.md").read_text(encoding="utf-8")
    written = bundle_reports(manifest)["report.md"]
    assert written == report  # what the pipeline wrote is the manifest's rendering
    assert markdown_from_manifest(manifest, plot_file="report.svg") == report
    shuffled = copy.deepcopy(manifest)
    shuffled["stages"] = dict(sorted(manifest["stages"].items()))  # a manifest written with sorted keys
    assert markdown_from_manifest(shuffled, plot_file="report.svg") == report
    del shuffled["stage_order"]  # one written before the order was recorded
    assert markdown_from_manifest(shuffled, plot_file="report.svg") == report
    rows = [line.split("|")[1].strip() for line in report.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1:] == [*PIPELINE, "ort-quantize-dynamic (reference)"]
    files = bundle_reports(manifest)
    assert sorted(files) == ["report.html", "report.md", "report.svg"]
    assert "![accuracy against latency and size, with the budget](report.svg)" in files["report.md"]
    assert len(tradeoff_svgs(files["report.html"])) == 1 and len(tradeoff_svgs(files["report.svg"])) == 1
    # one self-contained page: nothing fetched, nothing run
    assert "<script" not in files["report.html"] and "http" not in files["report.html"]


def test_edgegolf_report_shows_the_same_table_and_plot(compressed, capsys, tmp_path):
    code, stdout, stderr = run_cli(["report", compressed.output, "--html", tmp_path / "r.html",
                                    "--json", tmp_path / "r.json"], capsys)
    assert code == 0, stderr
    report = (compressed.output / "report.md").read_text(encoding="utf-8")
    table = [line for line in report.splitlines() if line.startswith("|")]
    assert table == [line for line in stdout.splitlines() if line.startswith("|")][:len(table)]
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    (svg,) = tradeoff_svgs(html)
    _check_points(svg, {s.name for s in compressed.stages})
    document = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    validate(document)  # the new fields (budget, conditions, notes...) are in the schema
    assert [s["name"] for s in document["bundle"]["stages"]] == [*PIPELINE, "ort-quantize-dynamic"]
    assert document["bundle"]["budget"] == {"size_mb": 50.0, "max_accuracy_drop": 100.0}


def test_a_search_bundle_report_draws_its_trials_beside_its_stages(compressed):
    from edgegolf.search.front import search_points

    records = trial_records(SEARCH_BUDGET)
    manifest = copy.deepcopy(compressed.manifest)
    manifest["search"] = {"trial": 1, "points": search_points(records, pareto_front(records))}
    document = new_document("report", bundle={**bundle_view(manifest), "artifact": bundle_section(
        compressed.output)["artifact"], "size_bytes": 1, "zstd_bytes": 1})
    (svg,) = tradeoff_svgs(render_html(document))
    labels = {s.name for s in compressed.stages} | {f"trial {n}" for n in range(len(TRIALS))}
    _check_points(svg, labels)
    assert "quantized" in render_markdown(document)
    assert table_columns(bundle_view(manifest)["stages"])[0] == "stage"
    assert len(stage_rows(bundle_view(manifest)["stages"])) == len(compressed.stages)


def test_a_real_search_writes_its_front_page_and_its_bundle_reports_every_trial(tiny_bert, tmp_path, capsys):
    pytest.importorskip("optuna")
    recipe = tmp_path / "quick.toml"
    recipe.write_text('[optimize]\nmode = "off"\n[evaluate]\nlimit = 40\ncalibration_size = 4\n'
                      "[bench]\nruns = 5\nwarmup = 1\nmax_seconds = 0.3\n", encoding="utf-8")
    out = tmp_path / "out"
    code, _, stderr = run_cli(["search", tiny_bert, "--budget", "size<=50MB,drop<=100", "--trials", "2",
                                    "--recipe", recipe, "-o", out], capsys)
    assert code == 0, stderr
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    points = manifest["search"]["points"]
    assert len(points) == manifest["search"]["completed_trials"] == 2
    assert {p["number"] for p in points if p["front"]} == set(manifest["search"]["front"])
    page = (tmp_path / "out.search" / "front.html").read_text(encoding="utf-8")
    (svg,) = tradeoff_svgs(page)
    _check_points(svg, {f"trial {p['number']}" + (" (chosen)" if p["number"] == manifest["search"]["trial"] else "")
                        for p in points})
    code, _, stderr = run_cli(["report", out, "--html", tmp_path / "r.html", "--json", tmp_path / "r.json"], capsys)
    assert code == 0, stderr
    validate(json.loads((tmp_path / "r.json").read_text(encoding="utf-8")))
    (svg,) = tradeoff_svgs((tmp_path / "r.html").read_text(encoding="utf-8"))
    _check_points(svg, set(manifest["stages"]) | {f"trial {p['number']}" for p in points})


def test_a_causal_lm_bundle_is_plotted_in_bits_per_byte(compressed):
    manifest = copy.deepcopy(_within_budget(compressed.manifest))
    manifest["task"] = "causal-lm"
    for i, stage in enumerate(manifest["stages"].values()):  # the key a causal LM's stages record
        stage["metrics"]["bits_per_byte"] = 1.10 + 0.01 * i
    (svg,) = tradeoff_svgs(tradeoff_plot(bundle_view(manifest)))
    for panel in panels(svg):
        assert not panel.higher_up and 1.0 < panel.y0 < 1.10 and 1.13 < panel.y1 < 1.2
        assert "quality" not in {e.get("data-field") for e in panel.find("limit")}  # the drop is on accuracy
    _check_points(svg, {s.name for s in compressed.stages})
    (caption,) = [e.text for e in svg.iter() if e.get("class") == "caption"]
    assert "accuracy drop <= 1 points (the plot shows bits/byte)" in caption


def test_stages_come_in_pipeline_order_whatever_order_the_manifest_keeps():
    from edgegolf.reports.stages import ordered_stages

    def named(*names: str) -> dict:
        return {name: {"reference": name.startswith("ref-")} for name in names}

    # sorted keys (as some JSON writers keep them): teacher last alphabetically, first here
    assert [n for n, _ in ordered_stages(named("onnx-fp32", "onnx-optimized", "quantized", "ref-ort", "teacher"))] == \
        ["teacher", "onnx-fp32", "onnx-optimized", "quantized", "ref-ort"]
    # a stage this list does not know stays right after the stage recorded before it
    assert [n for n, _ in ordered_stages(named("teacher", "ref-a", "pruned", "onnx-fp32", "quantized"))] == \
        ["teacher", "pruned", "onnx-fp32", "quantized", "ref-a"]
    # a manifest that records the order the pipeline ran its stages in is shown in that order
    order = ["teacher", "onnx-fp32", "toy-stage", "quantized", "ref-ort"]
    assert [n for n, _ in ordered_stages(named("onnx-fp32", "quantized", "ref-ort", "teacher", "toy-stage"), order)] \
        == order
