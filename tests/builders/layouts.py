"""Bundles for the layout tests, built the way a user builds them: `edgegolf compress --layout`.

`python -m tests.builders.layouts OUT` writes OUT/minilm (the real all-MiniLM-L6-v2, default
quantization), OUT/classifier (a tiny BERT classifier) and OUT/llama, OUT/gpt2 (tiny causal
LMs). The optimum tests run it with the main environment's interpreter (transformers 5, the
bundles users have) while they themselves load the bundles in Optimum's environment
(transformers<4.58): see `build_layout_bundles`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.builders.paths import ROOT

QUICK = ["--eval-limit", "40", "--optimize", "off"]
BUNDLES = ("minilm", "classifier", "llama", "gpt2")


def build_layout_bundles(out: Path, python: str | None = None) -> dict[str, Path]:
    """Run this module under `python` (default: EDGEGOLF_BUNDLE_PYTHON, else this interpreter)."""
    python = python or os.environ.get("EDGEGOLF_BUNDLE_PYTHON") or sys.executable
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([python, "-m", "tests.builders.layouts", str(out)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=1500)
    if done.returncode != 0:
        raise RuntimeError(f"building the layout bundles with {python} failed:\n{done.stderr[-3000:]}")
    return {name: out / name for name in BUNDLES}


def _compress(recipe: Path, *args: str) -> None:
    command = [sys.executable, "-m", "edgegolf", "compress", *args, "--recipe", str(recipe)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")


def main(out: Path) -> None:
    from tests.builders.causal_lm import bbc_texts, save_tiny_lm
    from tests.builders.models import save_tiny_bert

    work = out / "work"
    work.mkdir(parents=True)
    recipe = work / "quick.toml"  # short latency runs; the bundles are what matters here
    recipe.write_text("[bench]\nruns = 5\nwarmup = 1\nmax_seconds = 0.5\nseq = 32\n[evaluate]\ncalibration_size = 4\n",
                      encoding="utf-8")
    _compress(recipe, "-o", str(out / "minilm"), *QUICK, "--layout", "optimum", "--layout", "sentence-transformers")
    classifier = save_tiny_bert(work / "tiny-classifier", classifier=True)
    _compress(recipe, str(classifier), "-o", str(out / "classifier"), *QUICK, "--quantize", "int8-dynamic",
              "--layout", "optimum")
    text = work / "bbc.txt"
    text.write_text("\n\n".join(bbc_texts()[1000:1006]), encoding="utf-8")
    for arch in ("llama", "gpt2"):
        model = save_tiny_lm(work / f"tiny-{arch}", arch)
        _compress(recipe, str(model), "-o", str(out / arch), "--task", "causal-lm", "--data", str(text),
                  "--optimize", "off", "--quantize", "int8-dynamic", "--layout", "optimum")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
