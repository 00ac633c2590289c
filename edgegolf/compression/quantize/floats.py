"""Schemes that keep float weights: none (a copy) and float16."""

from __future__ import annotations

import shutil
from pathlib import Path

from edgegolf.compression.quantize.configs import Fp16, NoQuant
from edgegolf.compression.quantize.graph import save_model
from edgegolf.compression.quantize.registry import quantizer


@quantizer(NoQuant)
def _no_quant(config: NoQuant, src: Path, dst: Path, excluded: list[str], feeds) -> None:
    shutil.copyfile(src, dst)


@quantizer(Fp16)
def _fp16(config: Fp16, src: Path, dst: Path, excluded: list[str], feeds) -> None:
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(src)))
    model.convert_float_to_float16(keep_io_types=True, node_block_list=excluded or None)
    save_model(model.model, dst)
