"""GPU targets: without a GPU they must refuse with what to install; with one, they measure.

The refusal tests run here (no GPU, CPU onnxruntime, CPU torch); the measuring tests are
marked gpu and skipped where CUDA is absent.
"""

from __future__ import annotations

import onnxruntime as ort
import pytest

from edgegolf.devices.bench import BenchSettings, bench
from edgegolf.devices.cuda import bench_torch_cuda, check_torch_cuda, ort_providers
from edgegolf.devices.inputs import bench_onnx
from edgegolf.devices.profiles import get_profile
from edgegolf.errors import DeviceError, MissingExtraError, RecipeError
from tests.builders.bundles import build_bundle
from tests.builders.cli import run_cli

HAS_ORT_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
TEXTS = ["the bank shares fell after results", "the band released a new album"] * 4


def _torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_bundle(tmp_path_factory.mktemp("gpu") / "b", max_length=32)


@pytest.mark.skipif(HAS_ORT_CUDA, reason="onnxruntime-gpu is installed here")
@pytest.mark.parametrize("name, provider", [("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider")])
def test_cuda_profiles_name_what_to_install(name, provider):
    with pytest.raises(MissingExtraError) as info:
        ort_providers(get_profile(name))
    message = str(info.value)
    assert provider in message and "onnxruntime-gpu" in message and ort.__version__ in message
    assert "\n" not in message


@pytest.mark.skipif(HAS_ORT_CUDA, reason="onnxruntime-gpu is installed here")
def test_cli_bench_on_cuda_fails_before_timing_and_writes_nothing(bundle, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code, stdout, stderr = run_cli(["bench", bundle.folder, "--device", "cpu-1,cuda", "--seq", "8", "--json", out],
                                   capsys)
    assert code == 2 and stdout == "" and not out.exists()
    assert stderr.strip().splitlines()[-1].startswith("error: device 'cuda' needs onnxruntime's CUDAExecutionProvider")
    assert "bench" not in stderr.split("error:")[0]  # nothing was timed first (cpu-1 comes first in the list)


@pytest.mark.skipif(HAS_ORT_CUDA, reason="onnxruntime-gpu is installed here")
def test_pipeline_bench_path_refuses_cuda_too(bundle):
    with pytest.raises(MissingExtraError, match="onnxruntime-gpu"):
        bench_onnx(bundle.folder / "model.onnx", bundle.folder / "tokenizer.json", bundle.spec, get_profile("cuda"),
                   TEXTS, seq=8, runs=5)
    with pytest.raises(DeviceError, match="not an onnxruntime target"):
        bench_onnx(bundle.folder / "model.onnx", bundle.folder / "tokenizer.json", bundle.spec,
                   get_profile("ssh://a@b"), TEXTS, seq=8, runs=5)


def test_torch_cuda_refuses_without_a_gpu(bundle, tiny_bert):
    if _torch_cuda():
        pytest.skip("this machine has a CUDA GPU")
    import torch

    with pytest.raises(DeviceError) as info:
        check_torch_cuda()
    assert f"torch {torch.__version__}" in str(info.value) and "CUDA build of torch" in str(info.value)
    with pytest.raises(DeviceError, match="needs an NVIDIA GPU"):
        bench(bundle.folder, [get_profile("torch-cuda")], BenchSettings(seqs=(8,)), texts=TEXTS, torch_model=tiny_bert)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_ORT_CUDA, reason="needs onnxruntime-gpu and a GPU")
def test_ort_cuda_bench_measures(bundle):
    result = bench(bundle.folder, [get_profile("cuda")], BenchSettings(batches=(1, 4), seqs=(8, 32), runs=20),
                   texts=TEXTS)
    device = result["devices"][0]
    assert device["runtime"]["providers"][0] == "CUDAExecutionProvider"
    assert all(0 < s["latency"]["p50_ms"] < 1000 for s in device["shapes"])


@pytest.mark.gpu
def test_torch_cuda_graph_fp16_measures(bundle, tiny_bert):
    if not _torch_cuda():
        pytest.skip("needs a CUDA GPU and a CUDA build of torch")
    graph = bench_torch_cuda(tiny_bert, "feature-extraction", TEXTS, batch=2, seq=32, runs=30, max_seconds=None)
    eager = bench_torch_cuda(tiny_bert, "feature-extraction", TEXTS, batch=2, seq=32, runs=30, max_seconds=None,
                             cuda_graph=False)
    assert 0 < graph.p50_ms < 100 and 0 < eager.p50_ms < 100
    with pytest.raises(RecipeError, match="--torch-model"):
        bench(bundle.folder, [get_profile("torch-cuda")], BenchSettings(seqs=(8,)), texts=TEXTS)


@pytest.mark.parametrize("device, words", [
    ("ssh://pi@edge-box", "is not an onnxruntime target on this host"),
    ("torch-cuda", "is not an onnxruntime target on this host"),
] + ([] if HAS_ORT_CUDA else [("cuda", "onnxruntime-gpu")]))
def test_compress_refuses_devices_it_cannot_time_before_any_work(device, words, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(["compress", "--device", device, "-o", out], capsys)
    assert code == 2 and words in stderr and not out.exists()


def test_torch_target_inputs_and_forward_on_cpu(tiny_bert):
    """The torch-cuda target's model and inputs, built on the CPU: same code, no GPU needed."""
    import numpy as np
    import torch

    from edgegolf.devices.cuda import torch_inputs
    from edgegolf.tasks import get_task

    module, inputs = torch_inputs(tiny_bert, "feature-extraction", TEXTS, batch=2, seq=16, device="cpu", fp16=False)
    assert [tuple(t.shape) for t in inputs] == [(2, 16)] * len(inputs) and bool(inputs[1].all())  # no padding
    with torch.inference_mode():
        states = module(*inputs)[0]
    assert tuple(states.shape) == (2, 16, 32)
    # SDPA (what the target switches to) gives the numbers of the eager model the adapter loads
    adapter = get_task("feature-extraction")
    names = ("input_ids", "attention_mask", "token_type_ids")[: len(inputs)]
    eager = adapter.torch_outputs(adapter.load_model(str(tiny_bert)), {n: t.numpy() for n, t in zip(names, inputs)})[0]
    np.testing.assert_allclose(states.numpy(), eager, atol=1e-4)
