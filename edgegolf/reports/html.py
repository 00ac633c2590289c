"""A report document as one self-contained HTML page: the Markdown report's text and tables,
followed by inline SVG plots. No script, no stylesheet or font from elsewhere: it opens
offline and can be mailed as one file."""

from __future__ import annotations

import re
from html import escape
from typing import Any

from edgegolf.reports import svg
from edgegolf.reports.markdown import render_markdown
from edgegolf.reports.stages import bundle_view, markdown_from_manifest, tradeoff_plot

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
svg.plot { display: block; margin: 1em 0; font-family: system-ui, sans-serif; max-width: 100%; height: auto; }
"""


def _inline(text: str) -> str:
    text = escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"`(.+?)`", r"<code>\1</code>", text)
    return re.sub(r"(?<!\w)_(.+?)_(?!\w)", r"<em>\1</em>", text)


def markdown_to_html(markdown: str) -> str:
    """The subset render_markdown writes: headings, tables, bullet lists, paragraphs."""
    out: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([cell.strip() for cell in lines[i].strip("|").split("|")])
                i += 1
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in rows[0]) + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows[2:]]
            out.append("</tbody></table>")
            continue
        elif line.startswith("- "):
            out.append("<ul>")
            while i < len(lines) and lines[i].startswith("- "):
                out.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            out.append("</ul>")
            continue
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    return "\n".join(out)


def bench_plots(bench: dict[str, Any]) -> list[str]:
    devices = bench["devices"]
    plots = []
    shapes = [(s["batch"], s["seq"]) for s in devices[0]["shapes"]]
    for batch, seq in shapes:  # latency distribution per device, one chart per shape
        series = [(d["device"], s["latency"].get("samples_ms") or [])
                  for d in devices for s in d["shapes"] if (s["batch"], s["seq"]) == (batch, seq)]
        if any(values for _, values in series):
            plots.append(svg.histogram(f"Latency distribution, batch {batch} x {seq} tokens", series))
    seqs = bench["settings"]["seqs"]
    series = []
    for d in devices:
        for batch in bench["settings"]["batches"]:
            points = [(s["seq"], s["latency"]["p50_ms"]) for s in d["shapes"] if s["batch"] == batch]
            series.append((f"{d['device']} batch {batch}", [p[0] for p in points], [p[1] for p in points]))
    plots.append(svg.lines("p50 latency against sequence length" + ("" if len(seqs) > 1 else " (one length)"),
                           "sequence length (tokens)", "p50 latency (ms)", series))
    generating = [d for d in devices if d.get("generation")]
    if generating and len(generating[0]["generation"]) > 1:
        series = [(f"{d['device']} decode", [g["cache"] for g in d["generation"]],
                   [g["decode_tokens_per_s"] or 0.0 for g in d["generation"]]) for d in generating]
        plots.append(svg.lines("Decode tokens/s against cache length (batch 1)", "cached tokens", "tokens per second",
                               series))
    if len(bench["settings"]["batches"]) > 1:
        series = []
        for d in devices:
            for seq in seqs:
                points = [(s["batch"], s["throughput_per_s"] or 0.0) for s in d["shapes"] if s["seq"] == seq]
                series.append((f"{d['device']} seq {seq}", [p[0] for p in points], [p[1] for p in points]))
        plots.append(svg.lines("Throughput against batch size", "batch size", "items per second", series))
    return plots


def compare_plots(compare: dict[str, Any]) -> list[str]:
    series = [(side.upper(), compare[side]["latency"].get("samples_ms") or []) for side in ("a", "b")]
    names = f"A = {compare['a']['artifact']['label'][:30]}, B = {compare['b']['artifact']['label'][:30]}"
    return [svg.histogram(f"Latency, batch {compare['batch']} x {compare['seq']}: {names}", series)]


def page(markdown: str, plots: list[str], *, lead: str | None = None) -> str:
    """One self-contained HTML page: the Markdown's text and tables, then the plots. `lead`
    (the trade-off plot) goes right under the first table, where the reader looks first."""
    title = escape(markdown.splitlines()[0].lstrip("# "))
    body = markdown_to_html(markdown)
    if lead:
        cut = body.find("</table>")
        body = body + "\n" + lead if cut < 0 else body[:cut + 8] + "\n" + lead + body[cut + 8:]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{STYLE}</style></head><body>\n{body}\n"
            + ("<h2>Plots</h2>\n" + "\n".join(plots) if plots else "") + "\n</body></html>\n")


def render_html(doc: dict[str, Any]) -> str:
    plots: list[str] = []
    lead = tradeoff_plot(doc["bundle"]) if doc.get("bundle", {}).get("stages") else None
    if "bench" in doc:
        plots += bench_plots(doc["bench"])
    if "compare" in doc:
        plots += compare_plots(doc["compare"])
    return page(render_markdown(doc), plots, lead=lead)


def html_from_manifest(manifest: dict[str, Any]) -> str:
    """report.html of a compress bundle: report.md's text with the trade-off plot inline."""
    return page(markdown_from_manifest(manifest), [], lead=tradeoff_plot(bundle_view(manifest)))
