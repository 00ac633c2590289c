"""onnxruntime's quantizer advises pre-processing through the root logger on every
quantize_dynamic call; a reference stage measured beside the chain (evaluate.compare) must send
that to our debug log, as our own quantize does, not to the user's terminal."""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgegolf.pipeline.stages import ort_quantize_dynamic


def _matmul_graph(path):
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_the_quantize_dynamic_reference_keeps_onnxruntimes_advice_off_the_terminal(tmp_path, caplog):
    _matmul_graph(tmp_path / "fp32.onnx")
    root = logging.getLogger()
    handlers = list(root.handlers)
    # the CLI's in-process tests leave the "edgegolf" logger at their level: ask for DEBUG on both
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="edgegolf"):
        path, _ = ort_quantize_dynamic(tmp_path / "fp32.onnx", tmp_path)
    assert any(n.op_type == "MatMulInteger" for n in onnx.load(path).graph.node)  # it did quantize
    advice = [r for r in caplog.records if "pre-processing" in r.getMessage()]
    assert advice and all(r.levelno == logging.DEBUG and r.name.startswith("edgegolf") for r in advice)
    assert root.handlers == handlers  # nothing installed on the application's root logger
