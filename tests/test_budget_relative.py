"""Latency limits relative to the fp32 export (`p50<=0.1x`): the budget's form, the verdict's
words, and one real compress whose verdict divides by the fp32 export timed in the same run."""

from __future__ import annotations

import pytest

from edgegolf.errors import RecipeError
from edgegolf.recipe import Budget
from edgegolf.verdict import check_budget


def test_x_is_a_multiple_of_the_fp32_export_and_a_plain_number_stays_ms():
    budget = Budget.parse("size<=6MB,p50<=0.1x,p95<=0.2x,drop<=1")
    assert (budget.p50_ratio, budget.p95_ratio, budget.p50_ms, budget.size_mb) == (0.1, 0.2, None, 6.0)
    assert budget.relative_fields() == ["p50_ratio", "p95_ratio"]
    assert Budget.parse("p50<=0.1").p50_ms == 0.1 and Budget.parse("p50<=0.1").p50_ratio is None
    assert Budget.parse("p50<=8ms,p50<=0.5x").to_dict() == {"p50_ms": 8.0, "p50_ratio": 0.5}
    assert Budget.from_dict({"p50_ratio": 0.25}).p50_ratio == 0.25  # the TOML form: [budget] p50_ratio = 0.25


@pytest.mark.parametrize("term, words", [
    ("size<=0.1x", "has unit 'x'; only p50 and p95 take x (a multiple of the fp32 export's latency); size takes mb"),
    ("drop<=1x", "only p50 and p95 take x"),
    ("p50<=3mb", "p50 takes ms or x (a multiple of the fp32 export's p50)"),
    ("p95<=-0.1x", "is malformed"),
])
def test_bad_relative_terms_get_one_line_naming_what_is_accepted(term, words):
    with pytest.raises(RecipeError) as info:
        Budget.parse(term)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_the_verdict_names_the_ratio_and_both_latencies():
    budget = Budget.parse("p50<=0.1x,p95<=0.5x")
    verdict = check_budget(budget, {"p50_ms": 5.1, "p95_ms": 6.0}, fp32={"p50_ms": 42.3, "p95_ms": 50.0})
    p50, p95 = verdict.checks
    assert p50.measured == pytest.approx(5.1 / 42.3) and (p50.absolute, p50.reference) == (5.1, 42.3)
    assert p50.describe() == "p50 0.121x the fp32 export (5.1 ms of 42.3 ms) > 0.1x, 21% over"
    assert p95.describe() == "p95 0.12x the fp32 export (6 ms of 50 ms) <= 0.5x (24% of the limit)"
    assert not verdict.fits and verdict.binding is p50
    assert verdict.summary().startswith("DOES NOT FIT: p50 0.121x the fp32 export (5.1 ms of 42.3 ms) > 0.1x")
    with pytest.raises(RecipeError, match="needs the fp32 export's latency"):
        check_budget(budget, {"p50_ms": 5.1, "p95_ms": 6.0})


def test_a_pruned_compress_divides_by_the_unpruned_fp32_export_timed_in_the_same_run(tiny_bert, tmp_path):
    import edgegolf
    from tests.builders.recipes import QUICK

    recipe = {**QUICK, "optimize": {"mode": "off"}, "prune": {"layers": 1}, "quantize": {"scheme": "int8-dynamic"}}
    result = edgegolf.compress(str(tiny_bert), output=tmp_path / "out", recipe=recipe,
                               budget="p50<=1000x,p95<=0.000001x")
    stages = result.manifest["stages"]
    reference = stages["fp32-export"]  # the teacher's export: a reference row, not a step of the chain
    assert reference["reference"] is True and "unpruned" in reference["description"]
    final = stages["quantized"]["latency"]
    p50, p95 = result.verdict.checks
    assert p50.reference == reference["latency"]["p50_ms"] and p50.absolute == final["p50_ms"]
    assert p50.measured == pytest.approx(final["p50_ms"] / reference["latency"]["p50_ms"])
    assert p50.fits and not p95.fits and not result.verdict.fits
    assert result.manifest["verdict"]["binding"] == "p95_ratio"
    assert "x the fp32 export (" in result.manifest["verdict"]["summary"] and "> 1e-06x" in p95.describe()
    assert result.manifest["budget"] == {"p50_ratio": 1000.0, "p95_ratio": 1e-06}
