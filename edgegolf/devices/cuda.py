"""GPU targets: onnxruntime's CUDA and TensorRT execution providers, and PyTorch on CUDA.

Each target checks first that what it needs is really there and otherwise stops with a
message that names what to install: a GPU number is measured or it is absent, never guessed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from edgegolf.devices.latency import LatencyStats, measure_latency
from edgegolf.devices.profiles import DeviceProfile
from edgegolf.errors import DeviceError, MissingExtraError

log = logging.getLogger(__name__)

def ort_providers(profile: DeviceProfile) -> list[str] | None:
    """The onnxruntime providers a profile runs on (None: the CPU), after checking they exist.

    The profile's kind answers (edgegolf/devices/kinds.py); a kind that does not run ONNX in
    this process (ssh, torch-cuda) raises DeviceError.
    """
    return profile.device_kind.providers(profile)


def check_torch_cuda() -> None:
    """Refuse with what to install unless torch is importable and sees a CUDA GPU."""
    try:
        import torch
    except ImportError:
        raise MissingExtraError("device 'torch-cuda' needs torch: pip install 'edgegolf[compress]' with a CUDA build "
                                "of torch") from None
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise DeviceError(f"device 'torch-cuda' needs an NVIDIA GPU and a CUDA build of torch; torch {torch.__version__} "
                          f"here is {build} and sees no GPU: run on a GPU machine with a CUDA torch installed")


def torch_inputs(model_dir: str | Path, task: str, texts: Sequence[str], *, batch: int, seq: int, device: str,
                 fp16: bool):
    """(module, inputs): the task's forward taking the graph inputs positionally, and real-text
    inputs of exactly batch x seq on `device` (static tensors a CUDA graph can be captured on)."""
    import torch
    from transformers import AutoTokenizer

    from edgegolf.devices.inputs import fixed_shape_from_encoder
    from edgegolf.tasks import get_task

    adapter = get_task(task)
    model = adapter.load_model(str(model_dir)).eval()
    # the adapter loads eager attention for ONNX export; on a GPU, SDPA's fused kernels are what an app gets
    if hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation("sdpa")
        except (ValueError, ImportError) as exc:
            log.info("keeping eager attention: %s", exc)
    model = model.to(device)
    if fp16:
        model = model.half()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    names = adapter.input_names(model, tokenizer)
    max_length = int(getattr(model.config, "max_position_embeddings", seq))

    def encode(rows: list[str], length: int | None) -> dict:
        return dict(tokenizer(rows, truncation=True, max_length=length or max_length, padding=True, return_tensors="np"))

    feeds = fixed_shape_from_encoder(encode, names, max_length, texts, batch=batch, seq=seq)
    return adapter.export_module(model), [torch.from_numpy(feeds[name]).to(device) for name in names]


def bench_torch_cuda(
    model_dir: str | Path,
    task: str,
    texts: Sequence[str],
    *,
    batch: int,
    seq: int,
    fp16: bool = True,
    cuda_graph: bool = True,
    warmup: int = 10,
    runs: int = 100,
    max_seconds: float | None = 10.0,
    keep_samples: bool = False,
) -> LatencyStats:
    """Latency of the PyTorch model on GPU 0: fp16 weights, the forward replayed as one CUDA graph.

    A CUDA graph removes the per-kernel launch cost that dominates a small encoder at
    batch 1 (measured on an H100 for a MiniLM-L6-shaped BERT at sequence 128: 2.25 ms eager fp32,
    0.48 ms as an fp16 graph).
    Each timed call ends with a synchronize, so the number is the full GPU time.
    """
    check_torch_cuda()
    import torch

    module, ordered = torch_inputs(model_dir, task, texts, batch=batch, seq=seq, device="cuda", fp16=fp16)
    with torch.inference_mode():
        if cuda_graph:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # capture needs warm kernels, run on a side stream
                for _ in range(3):
                    module(*ordered)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                module(*ordered)

            def call() -> None:
                graph.replay()
                torch.cuda.synchronize()
        else:
            def call() -> None:
                module(*ordered)
                torch.cuda.synchronize()

        stats = measure_latency(call, warmup=warmup, runs=runs, max_seconds=max_seconds, keep_samples=keep_samples)
    log.info("torch-cuda %s batch %d x %d: p50 %.3f ms (%s%s)", Path(model_dir).name, batch, seq, stats.p50_ms,
             "fp16" if fp16 else "fp32", ", CUDA graph" if cuda_graph else "")
    return stats
