"""onnxruntime's fusion scripts warn "Input hidden size (..) is not same as weight matrix
dimension of q,k,v (..)" for every head-pruned graph (we pass the pruned attention width on
purpose). A search optimizes one such graph per pruned trial: the message must reach the user
only through edgegolf's logging, at DEBUG, never straight on the terminal."""

from __future__ import annotations

import subprocess
import sys

from tests.builders.search import subprocess_env

MESSAGE = "is not same as weight matrix dimension"

OPTIMIZE = """
import logging, sys
from edgegolf.compression.prune import attention_dims
from transformers import AutoConfig
from edgegolf.export.optimize import optimize_graph
if sys.argv[3] == "debug":
    logging.basicConfig(level=logging.DEBUG)
heads, hidden = attention_dims(AutoConfig.from_pretrained(sys.argv[1]))
report = optimize_graph(sys.argv[1] + "/model.onnx", sys.argv[2], num_heads=heads, hidden_size=hidden)
print("fused", sorted(report.fused_ops))
"""


def test_a_head_pruned_graphs_fusion_warning_reaches_only_our_debug_log(tiny_bert, tmp_path):
    import edgegolf
    from tests.builders.recipes import QUICK

    # the bundle's graph is the plain fp32 export of the head-pruned student (optimize off, no quantization)
    recipe = {**QUICK, "optimize": {"mode": "off"}, "prune": {"heads": 0.5}, "quantize": {"scheme": "none"}}
    bundle = tmp_path / "pruned"
    edgegolf.compress(str(tiny_bert), output=bundle, recipe=recipe)

    def optimize(level: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-c", OPTIMIZE, str(bundle), str(tmp_path / f"{level}.onnx"), level],
                              env=subprocess_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    quiet = optimize("default")  # a library user who configured no logging: what reached the terminal
    assert "fused [" in quiet.stdout  # the fusion ran
    assert MESSAGE not in quiet.stdout and MESSAGE not in quiet.stderr
    # the control: with our DEBUG on, the same run shows onnxruntime's warning, through our logger
    loud = optimize("debug")
    lines = [line for line in loud.stderr.splitlines() if MESSAGE in line]
    assert lines and all(line.startswith("DEBUG:edgegolf.export.optimize:") for line in lines), loud.stderr[-2000:]
