"""`edgegolf bench` and `edgegolf compare` on a causal-lm bundle: prefill, time to first token, decode tokens/s."""

from __future__ import annotations

import json

import pytest

import edgegolf
from edgegolf.devices.bench import BenchSettings, bench, resolve_devices
from edgegolf.devices.compare import compare
from edgegolf.errors import RecipeError
from edgegolf.reports import new_document, render_html, render_markdown
from edgegolf.reports.document import validate
from tests.builders.causal_lm import bbc_texts, save_tiny_lm

TOKENS = 300  # evaluation budget: the bundle is what these tests need, not its score
RECIPE = {"evaluate": {"limit": TOKENS, "calibration_size": 4},
          "bench": {"runs": 5, "warmup": 1, "max_seconds": 1.0, "seq": 32}, "quantize": {"scheme": "none"}}


@pytest.fixture(scope="module")
def llama_bundle(tmp_path_factory):
    folder = save_tiny_lm(tmp_path_factory.mktemp("tiny-llama"), "llama")
    text = tmp_path_factory.mktemp("text") / "bbc.txt"
    text.write_text("\n\n".join(bbc_texts()[1000:1060]), encoding="utf-8")
    out = tmp_path_factory.mktemp("bundle") / "out"
    return edgegolf.compress(str(folder), output=out, task="causal-lm", recipe=RECIPE,
                             overrides={"evaluate.data": str(text)})


def test_the_manifest_records_the_token_budget_and_a_bits_per_byte_interval(llama_bundle):
    manifest = json.loads((llama_bundle.output / "manifest.json").read_text())
    for stage in ("teacher", "onnx-fp32"):
        metrics = manifest["stages"][stage]["metrics"]
        assert metrics["token_budget"] == TOKENS == metrics["scored_tokens"]
        assert metrics["bits_per_byte_ci_low"] < metrics["bits_per_byte"] < metrics["bits_per_byte_ci_high"]
    fp32 = manifest["stages"]["onnx-fp32"]["metrics"]
    report = (llama_bundle.output / "report.md").read_text(encoding="utf-8")
    assert "bits/byte (95% CI)" in report
    assert f"{fp32['bits_per_byte']:.4f} ({fp32['bits_per_byte_ci_low']:.4f}-{fp32['bits_per_byte_ci_high']:.4f})" in report
    final = manifest["metrics"]  # the fp32 export against PyTorch: an increase interval around 0, tiny
    assert abs(final["bits_per_byte_increase_ci_low"]) < 1e-4 and abs(final["bits_per_byte_increase_ci_high"]) < 1e-4


def test_bench_reports_prefill_time_to_first_token_and_decode_per_cache_length(llama_bundle):
    settings = BenchSettings(seqs=(8, 40), runs=8, warmup=1, max_seconds=1.0, min_runs=3, cold_start=False)
    section = bench(llama_bundle.output, resolve_devices("cpu-1"), settings, texts=list(bbc_texts()[:8]))
    generation = section["devices"][0]["generation"]
    assert [g["cache"] for g in generation] == [8, 40]
    for g in generation:
        assert abs(g["prompt_tokens"] - g["cache"]) <= 2  # the TTFT prompt text re-tokenizes to about `cache` tokens
        for phase in ("prefill", "ttft", "decode"):
            assert g[phase]["p50_ms"] > 0 and g[phase]["runs"] >= 3
        assert g["decode_tokens_per_s"] == pytest.approx(1000 / g["decode"]["p50_ms"])
        assert g["prefill_tokens_per_s"] == pytest.approx(g["cache"] * 1000 / g["prefill"]["p50_ms"])
    document = new_document("bench", bench=section)
    validate(document)
    markdown = render_markdown(document)
    assert "### Generation (batch 1)" in markdown and "decode tokens/s" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| cpu-1 | 40 |"))
    assert f"{generation[1]['decode_tokens_per_s']:.1f}" in row
    assert "Decode tokens/s against cache length" in render_html(document)


def test_compare_times_decode_steps_of_two_causal_lm_bundles(llama_bundle):
    profile = resolve_devices("cpu-1")[0]
    section = compare(llama_bundle.output, llama_bundle.output, profile, seq=24, rounds=2, runs_per_round=4, warmup=1,
                      texts=list(bbc_texts()[:8]), phase="decode")
    assert section["phase"] == "decode" and section["a"]["latency"]["runs"] == 8
    document = new_document("compare", compare=section)
    validate(document)
    assert "one decode step after 24 cached tokens" in render_markdown(document)
    prefill = compare(llama_bundle.output, llama_bundle.output, profile, seq=24, rounds=2, runs_per_round=4, warmup=1,
                      texts=list(bbc_texts()[:8]))
    assert prefill["phase"] == "prefill"
    with pytest.raises(RecipeError, match="--phase"):
        compare(llama_bundle.output, llama_bundle.output, profile, phase="generate")
    with pytest.raises(RecipeError, match="batch 1"):
        compare(llama_bundle.output, llama_bundle.output, profile, batch=2, seq=8, phase="decode",
                texts=list(bbc_texts()[:8]))
