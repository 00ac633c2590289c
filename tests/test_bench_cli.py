"""`edgegolf bench`, `compare`, `report` and `devices` on tiny real graphs, through the CLI entry point."""

from __future__ import annotations

import json
import shutil

import pytest

from edgegolf.devices.bench import BenchSettings, bench
from edgegolf.devices.compare import compare, ratio_of_medians_ci
from edgegolf.devices.profiles import get_profile
from edgegolf.reports import validate
from edgegolf.runtime.manifest import write_manifest
from tests.builders.bundles import build_bundle
from tests.builders.cli import run_cli
from tests.builders.embedder import save_embedder, save_wordpiece_tokenizer
from tests.builders.models import bbc_vocabulary

TEXTS = ["the bank shares fell after results in the market", "the band released a new album and film"] * 4


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_bundle(tmp_path_factory.mktemp("bench") / "tiny", max_length=64)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """Two bare graphs sharing one tokenizer.json: narrow (32) and wide (4096) embeddings."""
    folder = tmp_path_factory.mktemp("graphs")
    vocab = bbc_vocabulary()
    save_wordpiece_tokenizer(folder / "tokenizer.json", vocab)
    save_embedder(folder / "narrow.onnx", len(vocab), 32)
    save_embedder(folder / "wide.onnx", len(vocab), 4096)
    return folder


def test_cli_bench_sweeps_devices_batches_and_lengths(bundle, tmp_path, capsys):
    out_json, out_html = tmp_path / "bench.json", tmp_path / "bench.html"
    code, stdout, stderr = run_cli(["-q", "bench", bundle.folder, "--device", "cpu-1,cpu-2", "--batch", "1,2",
                                    "--seq", "8,32", "--runs", "20", "--warmup", "2", "--max-seconds", "1",
                                    "--json", out_json, "--html", out_html], capsys)
    assert code == 0, stderr
    for device in ("cpu-1", "cpu-2"):
        for batch in (1, 2):
            for seq in (8, 32):
                assert f"| {device} | {batch} | {seq} |" in stdout
    assert "### Cold start and memory" in stdout
    doc = json.loads(out_json.read_text())
    validate(doc)
    assert doc["kind"] == "bench" and doc["schema_version"] == 1
    devices = doc["bench"]["devices"]
    assert [d["device"] for d in devices] == ["cpu-1", "cpu-2"]
    for d in devices:
        assert d["estimate"] is False and d["runtime"]["providers"] == ["CPUExecutionProvider"]
        assert d["cold_start"]["total_ms"] == pytest.approx(d["cold_start"]["load_ms"] + d["cold_start"]["first_run_ms"])
        assert (d["cold_start"]["batch"], d["cold_start"]["seq"]) == (2, 32)  # the largest shape
        assert 20e6 < d["peak_rss_bytes"] < 2e9
        for shape in d["shapes"]:
            lat = shape["latency"]
            assert len(lat["samples_ms"]) == lat["runs"] == 20
            assert shape["throughput_per_s"] == pytest.approx(shape["batch"] * 1000 / lat["mean_ms"])
    assert out_html.read_text().count("<svg") >= 5  # 4 histograms, latency-vs-length, throughput-vs-batch


def test_latency_grows_with_sequence_length(graphs):
    result = bench(graphs / "wide.onnx", [get_profile("cpu-1")], BenchSettings(seqs=(8, 128), runs=30, warmup=3,
                   cold_start=False), texts=TEXTS)
    short, long = result["devices"][0]["shapes"]
    assert result["artifact"]["kind"] == "onnx" and result["devices"][0]["cold_start"] is None
    # 16x the tokens of a 4096-wide output: the harness must see it
    assert long["latency"]["p50_ms"] > 2 * short["latency"]["p50_ms"]


@pytest.mark.parametrize("args, words", [
    (["--batch", "0,2"], "--batch is '0,2'; accepted: comma-separated positive integers"),
    (["--seq", "eight"], "--seq is 'eight'; accepted"),
    (["--seq", "65"], "--seq 65 is longer than tiny's max_length 64"),
    (["--device", "raspberry"], "device profile 'raspberry' is unknown; known profiles: cpu-1"),
    (["--device", "ssh://pi@host:0x"], "bad port"),
])
def test_cli_bench_bad_input(bundle, tmp_path, capsys, args, words):
    out = tmp_path / "b.json"
    code, stdout, stderr = run_cli(["bench", bundle.folder, *args, "--json", out], capsys)
    assert code == 2 and stdout == "" and not out.exists()
    assert words in stderr and "Traceback" not in stderr


def test_bare_onnx_needs_its_tokenizer(graphs, tmp_path, capsys):
    lone = tmp_path / "lone.onnx"
    shutil.copyfile(graphs / "narrow.onnx", lone)
    code, stdout, stderr = run_cli(["bench", lone], capsys)
    assert code == 2 and "has no tokenizer.json beside it" in stderr
    code, _, stderr = run_cli(["bench", tmp_path / "missing"], capsys)
    assert code == 2 and "does not exist; accepted: a bundle folder or an .onnx file" in stderr


def test_compare_sees_a_real_difference(graphs, tmp_path, capsys):
    out = tmp_path / "compare.json"
    code, stdout, stderr = run_cli(["-q", "compare", graphs / "narrow.onnx", graphs / "wide.onnx", "--seq", "64",
                                    "--rounds", "6", "--runs-per-round", "8", "--json", out, "--html",
                                    tmp_path / "c.html"], capsys)
    assert code == 0, stderr
    doc = json.loads(out.read_text())
    validate(doc)
    c = doc["compare"]
    assert c["a"]["latency"]["runs"] == c["b"]["latency"]["runs"] == 48
    assert c["ratio_b_over_a"] > 1.5 and c["ratio_ci95"][0] > 1 and c["beyond_noise"] is True
    assert "slower than A" in c["verdict"] and "larger than the noise" in stdout


def test_compare_same_artifact_is_near_one(graphs):
    c = compare(graphs / "narrow.onnx", graphs / "narrow.onnx", get_profile("cpu-1"), seq=16, rounds=4,
                runs_per_round=10, texts=TEXTS)
    low, high = c["ratio_ci95"]
    assert 0.5 < c["ratio_b_over_a"] < 2 and low <= c["ratio_b_over_a"] <= high


def test_ratio_of_medians_interval():
    a = [10.0, 10.2, 9.9, 10.1, 10.0] * 10
    ratio, low, high = ratio_of_medians_ci(a, [x * 1.5 for x in a])
    assert ratio == pytest.approx(1.5) and low == pytest.approx(1.5, rel=0.02) and high == pytest.approx(1.5, rel=0.02)
    ratio, low, high = ratio_of_medians_ci(a, a)
    assert low <= 1.0 <= high


def test_compare_refuses_the_torch_target(graphs):
    with pytest.raises(Exception, match="is not accepted: use cpu-1"):
        compare(graphs / "narrow.onnx", graphs / "wide.onnx", get_profile("torch-cuda"), texts=TEXTS)


def test_devices_lists_profiles_and_needs(tmp_path, capsys):
    path = tmp_path / "devices.toml"
    path.write_text('[profiles.pi]\nkind = "ssh"\nurl = "ssh://pi@10.0.0.7"\n[profiles.one-core]\nthreads = 1\n'
                    'cores = [0]\n')
    code, stdout, stderr = run_cli(["devices", "--profiles", path], capsys)
    assert code == 0, stderr
    rows = {line.split("|")[1].strip(): line for line in stdout.splitlines() if line.startswith("| ")}
    assert {"cpu-1", "cpu-2", "cpu-4", "cpu-all", "cuda", "tensorrt", "torch-cuda", "pi", "one-core"} <= set(rows)
    assert "| yes |" in rows["cpu-1"] and "onnxruntime-gpu" in rows["cuda"]
    assert "remote extra" in rows["pi"] and "| 0 |" in rows["one-core"]


def test_report_shows_the_manifest_stage_table(bundle, tmp_path, capsys):
    folder = tmp_path / "built"
    built = build_bundle(folder, max_length=64)
    # a stage table in the shape edgegolf compress writes (pipeline.StageResult.summary)
    latency = bench(built.folder, [get_profile("cpu-1")], BenchSettings(seqs=(16,), runs=20, cold_start=False),
                    texts=TEXTS)["devices"][0]["shapes"][0]["latency"]
    latency.pop("samples_ms")
    stages = {
        "fp32": {"description": "exported graph", "reference": True, "size_bytes": 90_000_000, "zstd_bytes": 83_000_000,
                 "latency": latency, "latency_also": {}, "peak_rss_bytes": 250_000_000,
                 "metrics": {"accuracy": 97.5}, "notes": []},
        "int8": {"description": "dynamic int8", "reference": False, "size_bytes": 23_000_000, "zstd_bytes": 19_000_000,
                 "latency": latency, "latency_also": {}, "peak_rss_bytes": 120_000_000,
                 "metrics": {"accuracy": 97.1}, "notes": []},
    }
    write_manifest(built.folder, {"task": "feature-extraction", "model": built.spec.to_dict(), "stages": stages,
                                  "device_profile": "cpu-1", "created_by": "edgegolf 0.1.0",
                                  "verdict": {"fits": True, "binding": "size", "summary": "FITS the budget", "checks": []}})
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    code, stdout, stderr = run_cli(["-q", "report", built.folder, "--bench", "--seq", "16", "--runs", "20",
                                    "--json", out_json, "--html", out_html], capsys)
    assert code == 0, stderr
    assert "| fp32 (reference) | 90.0 | 83.0 |" in stdout and "| int8 | 23.0 | 19.0 |" in stdout
    assert "| - | 97.10 |" in stdout and "FITS the budget" in stdout and "## Benchmark (measured now)" in stdout
    doc = json.loads(out_json.read_text())
    validate(doc)
    # pipeline order: the chain's stage first, the reference after it
    assert [s["name"] for s in doc["bundle"]["stages"]] == ["int8", "fp32"] and "bench" in doc
    html = out_html.read_text()
    assert "accuracy against p50 latency and size, every stage</title>" in html  # the trade-off plot


def test_report_of_a_bundle_without_stages(bundle, capsys):
    code, stdout, stderr = run_cli(["report", bundle.folder], capsys)
    assert code == 0, stderr
    assert "no stage table" in stdout and "Benchmark" not in stdout
