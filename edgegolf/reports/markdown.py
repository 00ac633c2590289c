"""A report document as Markdown (what `edgegolf bench/report/compare` print)."""

from __future__ import annotations

from typing import Any

from edgegolf.reports.stages import stage_lines

MB = 1e6


def _num(value: Any, fmt: str = "ms") -> str:
    if value is None:
        return "-"
    if fmt == "ms":  # two decimals, or three significant digits for sub-millisecond numbers
        return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"
    return format(value, fmt)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(row) + " |" for row in rows)]


def bench_lines(bench: dict[str, Any]) -> list[str]:
    s = bench["settings"]
    lines = [f"Inputs: {bench['inputs']}. Warm-up {s['warmup']}, up to {s['runs']} timed runs or "
             f"{_num(s['max_seconds'], 'g')} s per shape (at least {s['min_runs']}).", "", "### Latency", ""]
    rows = []
    warnings = []
    for d in bench["devices"]:
        for shape in d["shapes"]:
            lat = shape["latency"]
            low, high = lat["mean_ci95_ms"]
            rows.append([d["device"], str(shape["batch"]), str(shape["seq"]), _num(lat["p50_ms"]), _num(lat["p90_ms"]),
                         _num(lat["p99_ms"]), f"{_num(lat['mean_ms'])} ({_num(low)}-{_num(high)})",
                         _num(shape["throughput_per_s"], ".1f"), str(lat["runs"]), _num(lat["load_avg"], ".2f")])
            if lat["spread_warning"]:
                warnings.append(f"- {d['device']} {shape['batch']} x {shape['seq']}: {lat['spread_warning']}")
        for g in d.get("generation") or []:
            warnings += [f"- {d['device']} {phase} after {g['cache']} tokens: {g[phase]['spread_warning']}"
                         for phase in ("prefill", "ttft", "decode") if g[phase]["spread_warning"]]
    lines += _table(["device", "batch", "seq", "p50 ms", "p90 ms", "p99 ms", "mean ms (95% CI)", "items/s", "runs",
                     "load"], rows)
    lines += generation_lines(bench["devices"])
    cold = [d for d in bench["devices"] if d["cold_start"] or d["peak_rss_bytes"]]
    if cold:
        lines += ["", "### Cold start and memory (a fresh process)", ""]
        lines += _table(["device", "shape", "load ms", "first inference ms", "total ms", "peak RSS MB"], [
            [d["device"], f"{d['cold_start']['batch']} x {d['cold_start']['seq']}" if d["cold_start"] else "-",
             _num((d["cold_start"] or {}).get("load_ms"), ".1f"), _num((d["cold_start"] or {}).get("first_run_ms"), ".1f"),
             _num((d["cold_start"] or {}).get("total_ms"), ".1f"),
             _num(d["peak_rss_bytes"] / MB if d["peak_rss_bytes"] else None, ".1f")] for d in cold])
    lines += ["", "### Devices", ""]
    for d in bench["devices"]:
        rt = d["runtime"]
        lines.append(f"- **{d['device']}** ({d['kind']}, {d['where']}): onnxruntime {rt.get('onnxruntime')}, python "
                     f"{rt.get('python')}, {rt.get('cpu_count')} cores, {rt.get('platform')}, providers "
                     f"{', '.join(rt.get('providers') or [])}" + (f"; {d['note']}" if d.get("note") else ""))
    if warnings:
        lines += ["", "### Spread warnings", "", *warnings]
    return lines


def generation_lines(devices: list[dict[str, Any]]) -> list[str]:
    """causal-lm bundles: what an app that generates waits for, at batch 1, per cache length."""
    rows = [[d["device"], str(g["cache"]), _num(g["prefill"]["p50_ms"]), _num(g["prefill_tokens_per_s"], ".0f"),
             _num(g["ttft"]["p50_ms"]), _num(g["decode"]["p50_ms"]), _num(g["decode"]["p90_ms"]),
             _num(g["decode_tokens_per_s"], ".1f")]
            for d in devices for g in d.get("generation") or []]
    if not rows:
        return []
    return ["", "### Generation (batch 1)", "",
            "Prefill: the prompt of `cache` tokens on an empty cache. Time to first token: `generate(prompt, "
            "max_new_tokens=1)` end to end (tokenize, prefill, choose, detokenize). Decode: one new token after "
            "`cache` cached tokens; tokens/s = 1000 / its p50.", "",
            *_table(["device", "cache", "prefill p50 ms", "prefill tokens/s", "TTFT p50 ms", "decode p50 ms",
                     "decode p90 ms", "decode tokens/s"], rows)]


def compare_lines(c: dict[str, Any]) -> list[str]:
    rows = []
    for side in ("a", "b"):
        x = c[side]
        lat = x["latency"]
        rows.append([side.upper(), x["artifact"]["label"], _num(lat["p50_ms"]), _num(lat["p90_ms"]), _num(lat["p99_ms"]),
                     _num(lat["mean_ms"]), str(lat["runs"])])
    low, high = c["ratio_ci95"]
    what = (f"one decode step after {c['seq']} cached tokens (batch {c['batch']})" if c.get("phase") == "decode"
            else f"batch {c['batch']} x {c['seq']} tokens")
    return [f"Device {c['device']} ({c['where']}), {what}, {c['rounds']} interleaved rounds of "
            f"{c['runs_per_round']} runs each.", "",
            *_table(["", "artifact", "p50 ms", "p90 ms", "p99 ms", "mean ms", "runs"], rows), "",
            f"Median ratio B/A: **{c['ratio_b_over_a']:.3f}** (bootstrap 95% CI {low:.3f}-{high:.3f}).", "",
            f"**{c['verdict']}**"]


def bundle_lines(b: dict[str, Any]) -> list[str]:
    lines = [f"Bundle files: {b['size_bytes'] / MB:.2f} MB raw, {b['zstd_bytes'] / MB:.2f} MB zstd "
             f"({b.get('created_by') or 'not made by edgegolf compress'}).", ""]
    if b["stages"]:
        lines += [f"## Pipeline stages (measured when the bundle was built, on {b.get('device_profile') or 'its device profile'})",
                  "", *stage_lines(b)]
    else:
        lines.append("The manifest has no stage table (the bundle was not written by `edgegolf compress`).")
        verdict = b.get("verdict") or {}
        if verdict.get("summary"):
            lines += ["", f"Verdict: **{verdict['summary']}**"]
    return lines


def render_markdown(doc: dict[str, Any]) -> str:
    kind = doc["kind"]
    if kind == "compare":
        title = f"# edgegolf compare: {doc['compare']['a']['artifact']['label']} vs {doc['compare']['b']['artifact']['label']}"
        body = compare_lines(doc["compare"])
    else:
        label = (doc.get("bundle") or doc["bench"])["artifact"]["label"]
        title = f"# edgegolf {kind}: {label}"
        body = []
        if "bundle" in doc:
            body += bundle_lines(doc["bundle"]) + [""]
        if "bench" in doc:
            body += ["## Benchmark (measured now)", "", *bench_lines(doc["bench"])]
    return "\n".join([title, "", f"_{doc['created_by']}, {doc['created_at']}; every number was measured, none "
                      "estimated._", "", *body, ""])
