"""A model folder whose config asks for code shipped beside it (`auto_map`): refused unless
the user passes --trust-remote-code, and its code never runs when refused. With the flag
the code runs (a real tiny model whose class comes from the folder) and the manifest
records the flag."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from edgegolf.errors import EXIT_ERROR, EXIT_FITS, SourceError
from tests.builders.bad_files import REMOTE_CODE_MARKER, asks_for_remote_code
from tests.builders.cli import run_cli
from tests.builders.paths import ROOT

QUICK_RECIPE = """
[evaluate]
limit = 40
calibration_size = 4
[bench]
runs = 5
warmup = 0
max_seconds = 0.5
[optimize]
mode = "off"
[quantize]
scheme = "none"
"""


@pytest.fixture
def remote_code_model(tiny_bert, tmp_path):
    folder = shutil.copytree(tiny_bert, tmp_path / "model")
    asks_for_remote_code(folder)
    return folder


def test_without_the_flag_it_is_refused_and_its_code_never_runs(remote_code_model, tmp_path, capsys):
    out = tmp_path / "out"
    for command in (["compress", remote_code_model, "-o", out],
                    ["prune", remote_code_model, "--spec", "layers=1", "-o", out]):
        code, _, stderr = run_cli(command, capsys)
        assert code == EXIT_ERROR, stderr
        assert "asks to run code shipped with it (config.json auto_map: AutoModel -> custom_model.CustomModel)" in stderr
        assert "--trust-remote-code" in stderr and "Traceback" not in stderr
    from edgegolf.pipeline import compress

    with pytest.raises(SourceError, match="--trust-remote-code"):
        compress(remote_code_model, output=out)
    assert not (tmp_path / REMOTE_CODE_MARKER).exists()
    assert not out.exists()


def test_with_the_flag_its_code_runs_and_the_manifest_says_so(remote_code_model, tmp_path):
    (tmp_path / "quick.toml").write_text(QUICK_RECIPE)
    out = tmp_path / "out"
    # a private modules cache: transformers copies the model's code there before importing it
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_MODULES_CACHE": str(tmp_path / "modules")}
    done = subprocess.run([sys.executable, "-m", "edgegolf", "-q", "compress", str(remote_code_model),
                           "--trust-remote-code", "--recipe", str(tmp_path / "quick.toml"), "-o", str(out)],
                          check=False, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == EXIT_FITS, done.stderr
    assert (tmp_path / REMOTE_CODE_MARKER).read_text() == "the model's code ran"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["trust_remote_code"] is True
    load = next(record for record in manifest["provenance"] if record["stage"] == "load")
    assert load["settings"]["model_class"] == "CustomModel"  # the folder's class, not transformers' BertModel
