"""What a report says about a bundle, read from its manifest alone: the stages in pipeline
order, the one stage table (report.md, `edgegolf report`, the HTML page and the terminal all
show this table), the conditions the numbers were measured under, and the verdict.

`bundle_view(manifest)` is the only reader of manifest["stages"]; everything else renders
what it returns.
"""

from __future__ import annotations

import math

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgegolf.reports.tradeoff import Limits, Quality

MB = 1e6
# The chain's stages in the order the pipeline runs them; references (measured for
# comparison, not a step of the chain) come after, in the order they were measured.
# Manifests written before they recorded `stage_order` name their stages in this order.
PIPELINE_ORDER = ("teacher", "onnx-fp32", "onnx-optimized", "quantized")
COLUMNS = ("stage", "size MB", "zstd MB", "p50 ms", "p90 ms", "p99 ms", "peak RSS MB", "fidelity cos mean/min",
           "accuracy %")
# Task metrics shown as more columns when a stage measured them (header, format).
METRIC_COLUMNS = {
    "macro_f1": ("macro-F1 %", "{:.2f}"),
    "agreement": ("agreement %", "{:.2f}"),
    "bits_per_byte": ("bits/byte (95% CI)", "{:.4f}"),
    "perplexity": ("perplexity", "{:.2f}"),
}
_THREADS_OF_BUILTIN = {"cpu-1": 1, "cpu-2": 2, "cpu-4": 4}


def ordered_stages(stages: dict[str, dict[str, Any]],
                   order: list[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Pipeline order: the manifest's `stage_order` (the order the pipeline ran them) where it
    has one; else the chain (names in PIPELINE_ORDER by their place there; any other name right
    after the known stage recorded before it), then the references in recorded order. A
    manifest written with sorted keys loses the recorded order; this restores it."""
    if order and set(order) == set(stages):
        return [(name, stages[name]) for name in order]
    rank = {name: float(i) for i, name in enumerate(PIPELINE_ORDER)}
    keyed, previous = [], -1.0
    for index, (name, stage) in enumerate(stages.items()):
        place = rank.get(name, previous + 0.5)
        previous = max(previous, place) if name in rank else previous
        keyed.append(((1 if stage.get("reference") else 0, place, index), (name, stage)))
    return [pair for _, pair in sorted(keyed, key=lambda item: item[0])]


def bundle_view(manifest: dict[str, Any]) -> dict[str, Any]:
    """The report's `bundle` fields that come from the manifest (no file is read)."""
    stages = []
    for name, stage in ordered_stages(manifest.get("stages") or {}, manifest.get("stage_order")):
        metrics = stage.get("metrics") or {}
        stages.append({
            "name": name, "description": str(stage.get("description", "")), "reference": bool(stage.get("reference")),
            "size_bytes": stage.get("size_bytes"), "zstd_bytes": stage.get("zstd_bytes"),
            "latency": stage.get("latency"), "peak_rss_bytes": stage.get("peak_rss_bytes"),
            "accuracy": metrics.get("accuracy"), "metrics": metrics,
            "notes": [str(n) for n in stage.get("notes") or []],
            "latency_also": stage.get("latency_also") or {},
        })
    view = {
        "created_by": manifest.get("created_by"), "device_profile": manifest.get("device_profile"),
        "source": manifest.get("source"), "task": manifest.get("task"), "budget": manifest.get("budget") or {},
        "stages": stages, "verdict": manifest.get("verdict"), "conditions": measured_conditions(manifest, stages),
    }
    if manifest.get("search"):
        view["search"] = manifest["search"]
    return view


def _accuracy_meaning(manifest: dict[str, Any]) -> str:
    # the task adapter's own words, recorded by the pipeline (edgegolf.tasks: TaskAdapter.accuracy_meaning)
    return (manifest.get("evaluation") or {}).get("accuracy_meaning") or "the task's accuracy metric"


def measured_conditions(manifest: dict[str, Any], stages: list[dict[str, Any]]) -> str:
    """Where and how the stage table's numbers were measured, in one sentence."""
    recipe = manifest.get("recipe") or {}
    bench = recipe.get("bench") or {}
    profile = manifest.get("device_profile") or "its device profile"
    # the manifest names the profile; a built-in name says its threads, a user profile may not
    threads = (manifest.get("device") or {}).get("threads", _THREADS_OF_BUILTIN.get(profile))
    where = f"device profile {profile}" + (f" ({threads} thread{'s' if threads != 1 else ''})" if threads else "")
    chain = [s for s in stages if not s["reference"]]
    load = ((chain[-1]["latency"] or {}).get("load_avg") if chain else None)
    shape = f"batch {bench['batch']} x {bench['seq']} tokens, " if "batch" in bench and "seq" in bench else ""
    data = (recipe.get("evaluate") or {}).get("data") or (manifest.get("evaluation") or {}).get("data")
    return (f"latency: {shape}{where}, load average {'unknown' if load is None else f'{load:.2f}'} at the start; "
            f"accuracy: {_accuracy_meaning(manifest)}" + (f" on {data}" if data else ""))


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def metric_keys(stages: list[dict[str, Any]]) -> list[str]:
    return [key for key in METRIC_COLUMNS if any(key in s["metrics"] for s in stages)]


def table_columns(stages: list[dict[str, Any]]) -> list[str]:
    return [*COLUMNS, *(METRIC_COLUMNS[key][0] for key in metric_keys(stages))]


def _interval(metrics: dict[str, Any]) -> str:
    """The accuracy's 95 % interval where the manifest has one (edgegolf/measure/evaluate.py)."""
    low, high = metrics.get("accuracy_ci95_low"), metrics.get("accuracy_ci95_high")
    return "" if low is None or high is None else f" [{low:.1f}, {high:.1f}]"


def stage_rows(stages: list[dict[str, Any]]) -> list[list[str]]:
    """One row per stage, in the order given (bundle_view's: pipeline order)."""
    extra = metric_keys(stages)
    rows = []
    for s in stages:
        m, lat = s["metrics"], s["latency"] or {}
        fidelity = "-"
        if "fidelity_mean_cosine" in m:
            fidelity = f"{m['fidelity_mean_cosine']:.4f}"
            if "fidelity_min_cosine" in m:
                fidelity += f" / {m['fidelity_min_cosine']:.4f}"
        rows.append([
            s["name"] + (" (reference)" if s["reference"] else ""),
            _num(None if s["size_bytes"] is None else s["size_bytes"] / MB, ".1f"),
            _num(None if s["zstd_bytes"] is None else s["zstd_bytes"] / MB, ".1f"),
            _num(lat.get("p50_ms"), ".2f"), _num(lat.get("p90_ms"), ".2f"), _num(lat.get("p99_ms"), ".2f"),
            _num(s["peak_rss_bytes"] / MB if s["peak_rss_bytes"] else None, ".0f"),
            fidelity, _num(s["accuracy"], ".2f") + _interval(m),
            *(_metric_cell(key, m) for key in extra),
        ])
    return rows


def _metric_cell(key: str, metrics: dict[str, Any]) -> str:
    """A metric's cell; a causal LM's bits/byte with its 95% bootstrap interval when the manifest has one."""
    if key not in metrics:
        return "-"
    cell = METRIC_COLUMNS[key][1].format(metrics[key])
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    if all(isinstance(v, (int, float)) and math.isfinite(v) for v in (low, high)):
        cell += f" ({METRIC_COLUMNS[key][1].format(low)}-{METRIC_COLUMNS[key][1].format(high)})"
    return cell


def markdown_table(columns: list[str] | tuple[str, ...], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|",
            *("| " + " | ".join(row) + " |" for row in rows)]


def against_teacher(stages: list[dict[str, Any]]) -> str | None:
    """One sentence for readers without the plot: the bundle's stage against the teacher."""
    chain = [s for s in stages if not s["reference"]]
    if len(chain) < 2 or chain[0]["name"] != "teacher":
        return None
    teacher, final = chain[0], chain[-1]
    parts = []
    t_lat, f_lat = (teacher["latency"] or {}).get("p50_ms"), (final["latency"] or {}).get("p50_ms")
    if t_lat and f_lat:
        parts.append(f"p50 latency {f_lat:.2f} ms vs {t_lat:.2f} ms ({t_lat / f_lat:.2f}x faster)")
    if teacher["size_bytes"] and final["size_bytes"]:
        parts.append(f"size {final['size_bytes'] / MB:.1f} MB vs {teacher['size_bytes'] / MB:.1f} MB "
                     f"({teacher['size_bytes'] / final['size_bytes']:.2f}x smaller)")
    if teacher["accuracy"] is not None and final["accuracy"] is not None:
        parts.append(f"accuracy {final['accuracy'] - teacher['accuracy']:+.2f} points")
    if "bits_per_byte" in teacher["metrics"] and "bits_per_byte" in final["metrics"]:
        parts.append(f"bits/byte {final['metrics']['bits_per_byte'] - teacher['metrics']['bits_per_byte']:+.4f} "
                     "(lower is better)")
    return f"The bundle ({final['name']}) against the teacher: " + "; ".join(parts) + "." if parts else None


def stage_lines(view: dict[str, Any], *, plot_file: str | None = None) -> list[str]:
    """The stage table, what it was measured under, the verdict and the stages' notes."""
    stages = view["stages"]
    lines = [*markdown_table(table_columns(stages), stage_rows(stages)), "",
             f"All numbers were measured when the bundle was built: {view.get('conditions') or 'see the manifest'}.", ""]
    summary = against_teacher(stages)
    if summary:
        lines += [summary, ""]
    if plot_file:
        lines += [f"![accuracy against latency and size, with the budget]({plot_file})", ""]
    verdict = view.get("verdict") or {}
    lines += ["## Verdict", "", verdict.get("summary") or "no verdict recorded", ""]
    lines += [f"- {'fits' if c['fits'] else 'MISSES'}: {_describe(c)}" for c in verdict.get("checks") or []]
    if verdict.get("checks"):
        lines.append("")
    chain = [s for s in stages if not s["reference"]]
    also = list(chain[-1].get("latency_also") or {}) if chain else []
    if also:
        lines += ["## Latency on more device profiles", "",
                  *markdown_table(["stage", *(f"{name} p50 / p90 / p99 ms" for name in [view["device_profile"], *also])],
                                  [[s["name"], *(_triple(c) for c in [s["latency"], *((s.get("latency_also") or {}).get(n) for n in also)])]
                                   for s in stages]), ""]
    notes = [f"- **{s['name']}** ({s['description']}): " + "; ".join(s["notes"]) for s in stages if s.get("notes")]
    if notes:
        lines += ["## Stages", "", *notes, ""]
    warnings = [f"- {s['name']}: {(s['latency'] or {}).get('spread_warning')}" for s in stages
                if (s["latency"] or {}).get("spread_warning")]
    if warnings:
        lines += ["## Latency spread warnings", "", *warnings, ""]
    return lines


def _triple(latency: dict[str, Any] | None) -> str:
    if not latency:
        return "-"
    return f"{latency['p50_ms']:.2f} / {latency['p90_ms']:.2f} / {latency['p99_ms']:.2f}"


def _describe(check: dict[str, Any]) -> str:
    from edgegolf.verdict import LimitCheck

    return LimitCheck(check["field"], check["label"], check["unit"], check["measured"], check["limit"]).describe()


def markdown_from_manifest(manifest: dict[str, Any], *, plot_file: str | None = None) -> str:
    """report.md of a compress bundle, from its manifest. `plot_file` names the trade-off
    SVG written beside it (bundle_report_files), linked from the text."""
    view = bundle_view(manifest)
    source = (view.get("source") or {}).get("name") or "model"
    return "\n".join([f"# edgegolf report: {source} ({view.get('task') or 'unknown task'})", "",
                      *stage_lines(view, plot_file=plot_file)])


def _limit_words() -> dict[str, tuple[str, str]]:
    """Each budget limit's label and unit, as the Budget's fields declare them."""
    from edgegolf.recipe import Budget

    return {name: (limit["label"], limit["unit"]) for name, limit in Budget.limits().items()}


def plot_limits(budget: dict[str, float], teacher_accuracy: float | None, quality: Quality) -> Limits:
    """The budget as the trade-off plot draws it: p50 and size as lines, the accuracy drop as
    the lowest accuracy it allows; a line in the caption for each limit the axes cannot show."""
    from edgegolf.reports.tradeoff import ACCURACY, Limits

    not_drawn = []
    for field, value in budget.items():
        label, unit = _limit_words().get(field, (field, ""))
        why = {"p95_ms": " (the plot shows p50)", "zstd_mb": " (the plot shows raw bytes)",
               "max_accuracy_drop": " (the plot shows bits/byte)" if quality is not ACCURACY else
               " (no teacher accuracy measured)"}.get(field, "")
        if field in ("p50_ms", "size_mb") or (field == "max_accuracy_drop" and quality is ACCURACY
                                               and teacher_accuracy is not None):
            continue
        not_drawn.append(f"{label} <= {value:g} {unit}{why}")
    drop = budget.get("max_accuracy_drop")
    floor = None
    text = ""
    if drop is not None and quality is ACCURACY and teacher_accuracy is not None:
        floor = teacher_accuracy - drop
        text = f"accuracy >= {floor:.2f} (teacher {teacher_accuracy:.2f} - {drop:g})"
    return Limits(latency_ms=budget.get("p50_ms"), size_mb=budget.get("size_mb"), quality=floor, quality_text=text,
                  not_drawn=tuple(not_drawn))


def _stage_kind(stage: dict[str, Any]) -> str:
    from edgegolf.reports.tradeoff import REFERENCE, STAGE, TEACHER

    return REFERENCE if stage["reference"] else TEACHER if stage["name"] == "teacher" else STAGE


def tradeoff_plot(view: dict[str, Any], *, standalone: bool = False) -> str | None:
    """The bundle's trade-off plot: its stages (the final one is the chosen bundle) and, when a
    search chose it, every trial the manifest lists. None when no stage has the numbers."""
    from edgegolf.reports.tradeoff import ACCURACY, BITS_PER_BYTE, TRIAL, Point, tradeoff_svg

    stages = [s for s in view["stages"] if (s["latency"] or {}).get("p50_ms") is not None
              and s["size_bytes"] is not None and s["accuracy"] is not None]
    if not stages:
        return None
    causal = view.get("task") == "causal-lm" and all("bits_per_byte" in s["metrics"] for s in stages)
    quality = BITS_PER_BYTE if causal else ACCURACY
    key = "bits_per_byte" if causal else "accuracy"
    chain = [s for s in stages if not s["reference"]]
    chosen = chain[-1]["name"] if chain else None
    points = []
    for s in stages:
        value = s["metrics"][key] if causal else s["accuracy"]
        points.append(Point(s["name"], _stage_kind(s), s["latency"]["p50_ms"], s["size_bytes"] / MB, float(value),
                            chosen=s["name"] == chosen,
                            detail=f"{s['name']}: {value:.4g} {'bits/byte' if causal else '%'}, "
                                   f"p50 {s['latency']['p50_ms']:.3g} ms, {s['size_bytes'] / MB:.3g} MB"))
    search = view.get("search") or {}
    for t in search.get("points") or []:
        points.append(Point(f"trial {t['number']}", TRIAL, t["p50_ms"], t["size_mb"], t["accuracy"],
                            front=bool(t.get("front")), fits=bool(t.get("fits")),
                            detail=f"trial {t['number']}: {t['accuracy']:.2f} %, p50 {t['p50_ms']:.3g} ms, "
                                   f"{t['size_mb']:.3g} MB{'' if t.get('fits') else ', misses the budget'}"))
    teacher = next((s for s in stages if s["name"] == "teacher"), None)
    limits = plot_limits(view.get("budget") or {}, teacher["accuracy"] if teacher else None, quality)
    source = (view.get("source") or {}).get("name") or "the model"
    title = (f"{source}: {'bits/byte' if causal else 'accuracy'} against p50 latency and size, every stage"
             + (" and search trial" if search.get("points") else ""))
    return tradeoff_svg(points, limits, quality, title=title, standalone=standalone)
