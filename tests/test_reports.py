"""Report documents: the JSON schema, the self-contained HTML page and its SVG plots."""

from __future__ import annotations

import copy
import json
from html.parser import HTMLParser

import jsonschema
import pytest

from edgegolf.devices.bench import BenchSettings, bench
from edgegolf.devices.profiles import get_profile
from edgegolf.reports import (
    load_schema,
    new_document,
    render_html,
    render_markdown,
    to_json,
    validate,
    write_outputs,
)
from edgegolf.reports.html import markdown_to_html
from edgegolf.reports.svg import nice_ticks
from tests.builders.bundles import build_bundle

TEXTS = ["the bank shares fell after results in the market", "the band released a new album and film"] * 4


class Page(HTMLParser):
    """Every start tag with its attributes, the svg titles, and whether the nesting closes."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.stack: list[str] = []
        self.titles: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in ("meta", "rect", "line", "circle", "polyline"):
            self.stack.append(tag)
        self._in_title = tag == "title" and "svg" in self.stack

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag in ("rect", "line", "circle", "polyline"):
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()
        self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.titles.append(data)


@pytest.fixture(scope="module")
def bench_doc(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rep") / "a <b> & 'c'"  # a label that must be escaped
    build_bundle(folder, max_length=64)
    section = bench(folder, [get_profile("cpu-1"), get_profile("cpu-2")],
                    BenchSettings(batches=(1, 2), seqs=(8, 32), runs=20, warmup=2, cold_start=False), texts=TEXTS)
    return new_document("bench", bench=section)


def test_bench_document_validates_against_the_schema(bench_doc):
    validate(bench_doc)
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema_version"] == {"const": bench_doc["schema_version"]}


@pytest.mark.parametrize("break_it, where", [
    (lambda d: d.pop("bench"), "'bench' is a required property"),
    (lambda d: d.update(schema_version=2), "1 was expected"),
    (lambda d: d["bench"]["devices"][0]["shapes"][0]["latency"].pop("p50_ms"), "'p50_ms' is a required property"),
    (lambda d: d["bench"]["devices"][0].update(estimate=True), "False was expected"),
    (lambda d: d["bench"]["devices"][0]["shapes"][0].update(batch=0), "less than the minimum of 1"),
    (lambda d: d.update(surprise=1), "Additional properties are not allowed"),
])
def test_schema_refuses_broken_documents(bench_doc, break_it, where):
    broken = copy.deepcopy(bench_doc)
    break_it(broken)
    with pytest.raises(jsonschema.ValidationError, match=where):
        validate(broken)


def test_unknown_numbers_become_null_not_nan(bench_doc):
    doc = copy.deepcopy(bench_doc)
    doc["bench"]["devices"][0]["shapes"][0]["latency"]["load_avg"] = float("nan")
    text = to_json(doc)
    assert "NaN" not in text and json.loads(text)["bench"]["devices"][0]["shapes"][0]["latency"]["load_avg"] is None
    validate(doc)


def test_html_is_one_self_contained_page_with_its_plots(bench_doc):
    html = render_html(bench_doc)
    page = Page()
    page.feed(html)
    page.close()
    assert page.stack == []  # every element opened was closed, in order
    svgs = [attrs for tag, attrs in page.tags if tag == "svg"]
    # 4 histograms (one per shape, both devices in each), latency vs length, throughput vs batch
    assert len(svgs) == 6
    assert sum(t.startswith("Latency distribution") for t in page.titles) == 4
    assert "p50 latency against sequence length" in page.titles and "Throughput against batch size" in page.titles
    polylines = [attrs for tag, attrs in page.tags if tag == "polyline"]
    assert len(polylines) == 4 * 2 + 2 * 2 + 2 * 2  # two devices in each histogram; 4 lines per line chart
    assert all(len(p["points"].split()) >= 2 for p in polylines)
    # nothing is fetched: no script, no external stylesheet, no URL at all
    assert not [t for t, a in page.tags if t in ("script", "link", "img", "iframe")]
    assert "http" not in html and "url(" not in html
    assert "a &lt;b&gt; &amp; &#x27;c&#x27;" in html or "a &lt;b&gt; &amp; 'c'" in html
    assert "<b>" not in html


def test_markdown_and_html_carry_the_same_table(bench_doc):
    markdown = render_markdown(bench_doc)
    rows = [line for line in markdown.splitlines() if line.startswith("| cpu-")]
    assert len(rows) == 8 + 0  # 2 devices x 2 batches x 2 lengths; no cold-start rows (it was off)
    html = markdown_to_html(markdown)
    assert html.count("<tr>") == 8 + 1 and "<td>cpu-2</td>" in html


def test_outputs_are_written_whole_or_not_at_all(bench_doc, tmp_path):
    written = write_outputs(bench_doc, json_path=tmp_path / "r.json", html_path=tmp_path / "r.html")
    assert written == [tmp_path / "r.json", tmp_path / "r.html"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r.json"]  # no partial files left
    with pytest.raises(Exception, match="does not exist"):
        write_outputs(bench_doc, json_path=tmp_path / "r2.json", html_path=tmp_path / "missing" / "r.html")
    assert not (tmp_path / "r2.json").exists()


def test_nice_ticks():
    assert nice_ticks(0, 10) == [0, 2, 4, 6, 8, 10]
    ticks = nice_ticks(0.013, 0.047)
    assert ticks[0] <= 0.013 and ticks[-1] >= 0.047 and 3 <= len(ticks) <= 8
    assert nice_ticks(3.2, 3.2)[0] <= 3.2 <= nice_ticks(3.2, 3.2)[-1]


def test_every_plotted_point_lies_inside_its_svg(bench_doc):
    page = Page()
    page.feed(render_html(bench_doc))
    width = height = None
    checked = 0
    for tag, attrs in page.tags:
        if tag == "svg":
            width, height = float(attrs["width"]), float(attrs["height"])
        elif tag == "polyline":
            for pair in attrs["points"].split():
                x, y = map(float, pair.split(","))
                assert 0 <= x <= width and 0 <= y <= height, (x, y)
                checked += 1
        elif tag == "circle":
            assert 0 <= float(attrs["cx"]) <= width and 0 <= float(attrs["cy"]) <= height
    assert checked > 100
