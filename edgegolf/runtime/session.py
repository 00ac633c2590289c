"""One onnxruntime session per model: threads fixed, provider chosen, errors made readable."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import onnxruntime as ort

from edgegolf.errors import BundleError, InputError, MissingExtraError

log = logging.getLogger(__name__)

# Short names an app may use; full onnxruntime provider names are accepted as well.
PROVIDER_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def resolve_providers(providers: list[str] | None) -> list[str]:
    """onnxruntime provider names, in preference order, always ending with the CPU fallback."""
    if providers is None:
        return ["CPUExecutionProvider"]
    if isinstance(providers, str) or not all(isinstance(p, str) for p in providers) or not providers:
        raise InputError(f"providers is {providers!r}; accepted: None or a non-empty list such as ['cuda'] or ['cpu']")
    available = ort.get_available_providers()
    resolved: list[str] = []
    for name in providers:
        full = PROVIDER_NAMES.get(name.lower(), name)
        if full not in available:
            if full == "CUDAExecutionProvider":
                raise MissingExtraError(
                    f"provider {name!r} needs onnxruntime-gpu (this onnxruntime has {available}); "
                    "pip install onnxruntime-gpu, or ask for ['cpu']"
                )
            raise InputError(f"provider {name!r} is not available here; "
                             f"accepted: {sorted(PROVIDER_NAMES)} or one of {available}")
        if full not in resolved:
            resolved.append(full)
    if "CPUExecutionProvider" not in resolved:
        resolved.append("CPUExecutionProvider")  # ops a GPU provider lacks fall back here
    return resolved


def create_session(
    onnx_path: str | os.PathLike[str],
    *,
    threads: int | None = None,
    providers: list[str] | None = None,
) -> ort.InferenceSession:
    """An InferenceSession on `threads` intra-op threads (None: onnxruntime's default).

    Inter-op parallelism is off (sequential execution, one inter-op thread): BERT-like graphs
    are a chain, and a second pool would only compete with the first for cores.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads is {threads!r}; accepted: None (onnxruntime's default) or a positive integer")
    path = Path(onnx_path)
    if not path.is_file():
        raise BundleError(f"ONNX file {str(path)!r} does not exist")
    chosen = resolve_providers(providers)
    options = ort.SessionOptions()
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
    except Exception as exc:  # onnxruntime raises its own pybind types (InvalidProtobuf, Fail, ...)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(
            f"{path.name} is not a loadable ONNX model (corrupt, truncated, or its external data is missing): "
            f"{first_line}"
        ) from None
    used = session.get_providers()
    log.info("%s runs on %s (%s threads)", path.name, used[0], threads if threads is not None else "default")
    if used[0] != chosen[0]:
        log.warning("%s asked for %s but onnxruntime uses %s", path.name, chosen[0], used[0])
    return session
