"""The compress pipeline end to end on tiny real models: bundle, manifest, provenance, runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgegolf
from edgegolf.errors import OutputExistsError
from edgegolf.pipeline import build_recipe
from edgegolf.runtime import load
from edgegolf.runtime.manifest import sha256_file
from tests.builders.recipes import QUICK


@pytest.fixture(scope="module")
def embedding_bundle(tiny_bert, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "tiny-embed"
    recipe = {**QUICK, "quantize": {"scheme": "int8-dynamic"}}
    result = edgegolf.compress(str(tiny_bert), output=out, recipe=recipe, budget="size<=50MB,drop<=100")
    return result


@pytest.mark.support(task="feature-extraction", arch="bert",
                     stage=("load", "export", "optimize", "quantize:int8-dynamic", "evaluate"))
def test_every_stage_is_measured(embedding_bundle):
    result = embedding_bundle
    assert [s.name for s in result.stages] == ["teacher", "onnx-fp32", "onnx-optimized", "quantized"]
    teacher, fp32, optimized, quantized = result.stages
    assert teacher.metrics["fidelity_mean_cosine"] == pytest.approx(1.0)
    # The plain export computes what PyTorch computes, through the runtime's own tokenizer and pooling.
    assert fp32.metrics["fidelity_min_cosine"] > 0.9999
    assert optimized.metrics["fidelity_min_cosine"] > 0.999
    assert quantized.metrics["fidelity_mean_cosine"] > 0.9
    for stage in result.stages:
        assert stage.size.raw_bytes > 0 and stage.size.zstd_bytes > 0
        assert 0 < stage.latency.p50_ms <= stage.latency.p90_ms <= stage.latency.p99_ms
        assert stage.peak_rss_bytes > 10e6
        assert 0 <= stage.metrics["accuracy"] <= 100
    assert quantized.size.raw_bytes < fp32.size.raw_bytes
    assert result.verdict.fits and result.verdict.has_budget


@pytest.mark.support(task="feature-extraction", arch="bert", stage="runtime")
def test_bundle_manifest_and_runtime(embedding_bundle):
    out = embedding_bundle.output
    names = sorted(p.name for p in out.iterdir())
    assert {"model.onnx", "tokenizer.json", "config.json", "manifest.json", "report.md", "recipe.toml"} <= set(names)
    assert not any(name.startswith(".") for name in names)  # no work files left in the bundle
    manifest = json.loads((out / "manifest.json").read_text())
    for name in names:
        if name != "manifest.json":
            assert manifest["files"][name]["sha256"] == sha256_file(out / name)
    assert [r["stage"] for r in manifest["provenance"]] == ["load", "export", "optimize", "quantize"]
    assert manifest["provenance"][1]["measured"]["max_abs_diff"] < 1e-3
    assert manifest["provenance"][3]["measured"]["quantized_ops"]
    assert manifest["verdict"]["fits"] is True
    assert manifest["versions"]["onnxruntime"]
    # The app's view of the bundle is the measured final artifact.
    model = load(out)
    texts = ["Shares in the bank fell after the results.", "The band released a new album."]
    vectors = model.embed(texts)
    assert vectors.shape == (2, 32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_recipe_toml_reruns_the_same_recipe(embedding_bundle):
    recipe, budget = build_recipe(embedding_bundle.output / "recipe.toml")
    assert recipe == embedding_bundle.recipe
    assert budget == embedding_bundle.budget


def test_existing_output_is_not_overwritten(embedding_bundle, tiny_bert):
    out = embedding_bundle.output
    before = sha256_file(out / "manifest.json")
    with pytest.raises(OutputExistsError, match="pass --force"):
        edgegolf.compress(str(tiny_bert), output=out, recipe=QUICK)
    assert sha256_file(out / "manifest.json") == before


@pytest.mark.support(task="text-classification", arch="bert", stage=("load", "quantize:int8-dynamic", "runtime"))
def test_force_replaces_and_classification_runs(tiny_classifier, tmp_path):
    out = tmp_path / "clf"
    out.mkdir()
    (out / "old-file.txt").write_text("from an earlier run")
    recipe = {**QUICK, "quantize": {"scheme": "int8-dynamic"}, "optimize": {"mode": "off"}}
    result = edgegolf.compress(str(tiny_classifier), output=out, recipe=recipe, force=True)
    assert result.task == "text-classification"
    assert not (out / "old-file.txt").exists()
    assert [s.name for s in result.stages] == ["teacher", "onnx-fp32", "quantized"]
    teacher, fp32, _ = result.stages
    assert fp32.metrics["agreement"] == pytest.approx(100.0)
    assert 0 <= teacher.metrics["accuracy"] <= 100
    predictions = load(out).classify(["Shares fell sharply.", "The striker scored."])
    assert [p.label in {"business", "entertainment", "politics", "sports", "tech"} for p in predictions] == [True, True]


@pytest.mark.support(task="feature-extraction", arch="bert", stage="prune")
def test_pruned_student_is_exported_and_measured_against_the_teacher(tiny_bert, tmp_path, capsys):
    from tests.builders.cli import run_cli

    out = tmp_path / "pruned"
    code, stdout, stderr = run_cli(["compress", tiny_bert, "-o", out, "--prune", "layers=1,heads=0.5,ffn=0.5",
                                    "--quantize", "none", "--eval-limit", "40"], capsys)
    assert code == 0, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    prune = next(r for r in manifest["provenance"] if r["stage"] == "prune")
    assert prune["settings"] == {"layers": 1, "heads": 0.5, "ffn": 0.5}
    assert prune["measured"]["params_after"] < prune["measured"]["params_before"]
    stages = manifest["stages"]
    assert stages["onnx-fp32"]["size_bytes"] < stages["teacher"]["size_bytes"]
    # fidelity is to the unpruned teacher (an unpruned export agrees to ~1e-7)
    assert stages["onnx-fp32"]["metrics"]["fidelity_mean_cosine"] < 0.99999
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 1 and config["num_attention_heads"] == 1
    assert load(out).embed(["Shares fell."]).shape == (1, 32)


def test_fused_graph_is_judged_side_by_side_with_the_export(embedding_bundle):
    """optimize's review times the fused graph interleaved with the plain export and keeps it
    unless the whole interval of the ratio lies above 1 (two stage timings taken a minute apart
    once dropped a fused graph that was not slower)."""
    manifest = json.loads((embedding_bundle.output / "manifest.json").read_text())
    optimize = next(r for r in manifest["provenance"] if r["stage"] == "optimize")["measured"]
    ratio, low, high = optimize["p50_ratio_interleaved"]
    assert 0 < low <= ratio <= high
    assert optimize["kept"] is (low <= 1)
    note = " ".join(next(s for s in embedding_bundle.stages if s.name == "onnx-optimized").notes)
    assert f"interleaved p50 {ratio:.2f}x" in note


class _SideBySide:
    """A measurer whose interleaved timing is given: the review's rule, apart from the clock."""

    def __init__(self, ratio: tuple[float, float, float] | None):
        self.ratio = ratio

    def interleaved_ratio(self, *_):
        return self.ratio


@pytest.mark.parametrize(("side_by_side", "stage_ratio", "kept"), [
    ((1.04, 0.97, 1.12), 1.20, True),  # the stage timings say slower, side by side it is within the noise
    ((1.30, 1.21, 1.38), 0.90, False),  # slower beyond the noise side by side
    ((0.80, 0.75, 0.85), 1.10, True),
    (None, 1.10, False),  # a profile that cannot time two graphs side by side: the stage timings decide
    (None, 0.90, True),
])
def test_keep_if_faster_rule(side_by_side, stage_ratio, kept, tmp_path):
    from edgegolf.devices.latency import latency_stats
    from edgegolf.measure.artifact import StageResult
    from edgegolf.pipeline.stages import Artifact, Made, _keep_if_faster
    from edgegolf.recipe import OptimizeSettings

    def timed(name: str, p50: float) -> StageResult:
        return StageResult(name, name, [], None, latency_stats([p50] * 5, load_avg=0.0), 0, {})

    fused, plain = tmp_path / "fused.onnx", tmp_path / "plain.onnx"
    artifact = Artifact(model=None, tokenizer=None, graph=fused, fp32=plain)
    made = Made(None, artifact, OptimizeSettings(), {"fused_ops": {"Attention": 2}}, timed("onnx-optimized",
                10 * stage_ratio), [timed("onnx-fp32", 10.0)], None, _SideBySide(side_by_side))
    chosen, measured = _keep_if_faster(made)
    assert measured["kept"] is kept
    assert chosen.graph == (fused if kept else plain)
    assert ("p50_ratio_interleaved" in measured) is (side_by_side is not None)
