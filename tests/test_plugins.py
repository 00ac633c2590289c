"""Plugins register a quantization scheme, a task, a device kind and a pruning family from outside
the package, each in one or two files, and the real command line runs them.

Each toy below is a module written into tmp_path, named by EDGEGOLF_PLUGINS, and run through
`python -m edgegolf` in a fresh process: nothing inside edgegolf/ changes for any of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgegolf.errors import EXIT_ERROR, EXIT_FITS

REPO = Path(__file__).resolve().parent.parent

# --- the toys: each is what a user would write, one file (the task: two) -------------------------
TOY_SCHEME = '''
"""int8 weights through onnxruntime's quantize_dynamic with its own defaults: a scheme in one file."""
from dataclasses import dataclass

from edgegolf.compression.quantize import quantizer, register_scheme


@register_scheme("toy-int8")
@dataclass(frozen=True)
class ToyInt8:
    per_channel: bool = False
    exclude: tuple = ()


@quantizer(ToyInt8)
def _toy_int8(config, src, dst, excluded, feeds):
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(str(src), str(dst), per_channel=config.per_channel, nodes_to_exclude=list(excluded))
'''

# A task is two files: the runtime model (torch-free, what an app imports) and the adapter.
TOY_TASK_RUNTIME = '''
"""cls-embedding bundles: the first token's state, not normalised. Imports no torch."""
import numpy as np

from edgegolf.runtime.models import TaskModel
from edgegolf.runtime.registry import runtime_model


@runtime_model
class ClsEmbeddingModel(TaskModel):
    task = "cls-embedding"
    methods = ".cls_vectors()"

    def cls_vectors(self, texts, *, batch_size=32):
        parts = [np.asarray(outputs[0][:, 0, :], dtype=np.float32) for outputs, _ in self._run_batches(texts, batch_size)]
        return np.concatenate(parts)
'''

TOY_TASK = '''
"""cls-embedding: how the pipeline loads, scores and distills it."""
import numpy as np
import torch.nn.functional as F

from edgegolf.tasks.base import TaskAdapter, cosine_rows
from edgegolf.tasks.registry import register_task
from toy_task_runtime import ClsEmbeddingModel


@register_task
class ClsEmbedding(TaskAdapter):
    runtime_model = ClsEmbeddingModel
    auto_class = "AutoModel"
    output_names = ("last_hidden_state",)
    accuracy_meaning = "100 x mean cosine to the teacher's first-token state"

    def teacher_item(self, model, encoder, text):
        return self.torch_outputs(model, encoder.encode([text]))[0][0, 0]

    def artifact_item(self, runtime_model, text):
        return runtime_model.cls_vectors([text])[0]

    def score(self, teacher, candidate, split, model_config):
        cosine = cosine_rows(teacher.all, candidate.all)
        return {"accuracy": 100.0 * float(cosine.mean()), "cls_min_cosine": float(cosine.min())}

    def distill_view(self, outputs, attention_mask, config, layers):
        return {"cls": outputs.last_hidden_state[:, 0]}

    def distill_loss(self, student, teacher, attention_mask, config, labels=None):
        loss = (1 - F.cosine_similarity(student["cls"].float(), teacher["cls"].float(), dim=-1)).mean()
        return loss, {"cls_cosine": float(loss.detach())}
'''

TOY_DEVICE = '''
"""A device kind in one file: this host's CPU through an explicit provider list, one thread."""
from edgegolf.devices.kinds import DeviceKind, register_kind
from edgegolf.devices.profiles import DeviceProfile


@register_kind
class ToyBoard(DeviceKind):
    name = "toy-board"
    needs = "nothing: a toy that runs on this CPU"

    def builtin_profiles(self):
        return [DeviceProfile("toy-1", kind="toy-board", threads=1, description="the toy board's one core")]

    def providers(self, profile):
        return ["CPUExecutionProvider"]

    def threads(self, profile):
        return 1
'''

TOY_FAMILY = '''
"""A pruning family in one file: Megatron-BERT, BERT's module layout with pre-LayerNorm blocks."""
from edgegolf.compression.prune.arch import register_family
from edgegolf.compression.prune.bert import BertFamily


@register_family
class MegatronBert(BertFamily):
    name = "megatron-bert"
    model_types = ("megatron-bert",)

    def refit_points(self, block):
        return None  # pre-LayerNorm: the refit's norm(projection(x) + residual) is not what these blocks compute
'''

TOYS = {"toy_scheme": TOY_SCHEME, "toy_task_runtime": TOY_TASK_RUNTIME, "toy_task": TOY_TASK,
        "toy_device": TOY_DEVICE, "toy_family": TOY_FAMILY}
PLUGINS = "toy_scheme,toy_task,toy_device,toy_family"
QUICK_RECIPE = "[evaluate]\nlimit = 40\ncalibration_size = 4\n[bench]\nruns = 10\nwarmup = 2\nmax_seconds = 2.0\n"


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("plugins")
    for name, source in TOYS.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")
    return folder


def edgegolf(args: list, plugin_dir: Path, *, plugins: str | None = PLUGINS, timeout: float = 600
             ) -> subprocess.CompletedProcess:
    """`python -m edgegolf ARGS` in a fresh process, with the toys importable and named (or not)."""
    env = {k: v for k, v in os.environ.items() if k != "EDGEGOLF_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(plugin_dir), *filter(None, [env.get("PYTHONPATH")])])
    if plugins is not None:
        env["EDGEGOLF_PLUGINS"] = plugins
    return subprocess.run([sys.executable, "-m", "edgegolf", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, check=False)


def python(code: str, plugin_dir: Path, *, timeout: float = 300) -> str:
    """Run `code` in a fresh interpreter that sees the toys (as an app would, after importing them)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(plugin_dir)]))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def save_tiny_megatron(folder: Path) -> Path:
    import torch
    from transformers import BertTokenizer, MegatronBertConfig, MegatronBertModel

    from tests.builders.models import bbc_vocabulary

    torch.manual_seed(0)
    vocab = bbc_vocabulary()
    config = MegatronBertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=256)
    MegatronBertModel(config).eval().save_pretrained(folder)
    BertTokenizer(vocab=vocab, do_lower_case=True).save_pretrained(folder)
    return folder


def test_help_lists_what_the_plugins_register(plugin_dir):
    shown = edgegolf(["compress", "--help"], plugin_dir)
    assert shown.returncode == 0, shown.stderr
    assert "toy-int8" in shown.stdout and "cls-embedding" in shown.stdout
    assert "toy-board" in edgegolf(["bench", "--help"], plugin_dir).stdout
    plain = edgegolf(["compress", "--help"], plugin_dir, plugins=None)
    assert "int8-dynamic" in plain.stdout and "toy-int8" not in plain.stdout and "cls-embedding" not in plain.stdout


def test_a_plugin_that_fails_to_import_is_one_line_and_exit_2(plugin_dir, tmp_path):
    missing = edgegolf(["devices"], plugin_dir, plugins="toy_scheme,no_such_plugin")
    assert missing.returncode == EXIT_ERROR and missing.stdout == ""
    assert missing.stderr.strip() == ("error: plugin 'no_such_plugin' (from EDGEGOLF_PLUGINS) failed to import: "
                                      "ModuleNotFoundError: No module named 'no_such_plugin'")
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('the vendor SDK is not configured')\n")
    broken = edgegolf(["devices"], tmp_path, plugins="broken_plugin")
    assert broken.returncode == EXIT_ERROR and "Traceback" not in broken.stderr
    assert broken.stderr.strip().splitlines() == [
        "error: plugin 'broken_plugin' (from EDGEGOLF_PLUGINS) failed to import: RuntimeError: the vendor SDK is "
        "not configured"]


def test_toy_scheme_and_toy_task_compress_and_the_bundle_loads(plugin_dir, tiny_bert, tmp_path):
    recipe = tmp_path / "quick.toml"
    recipe.write_text(QUICK_RECIPE)
    out = tmp_path / "bundle"
    args = ["-q", "compress", tiny_bert, "-o", out, "--recipe", recipe, "--task", "cls-embedding",
            "--quantize", "toy-int8", "--optimize", "off", "--device", "toy-1"]
    refused = edgegolf(args, plugin_dir, plugins=None)  # without the plugins neither name exists
    assert refused.returncode == EXIT_ERROR and "cls-embedding" in refused.stderr and not out.exists()

    done = edgegolf(args, plugin_dir)
    assert done.returncode == EXIT_FITS, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["task"] == "cls-embedding"
    quantize = next(p for p in manifest["provenance"] if p["stage"] == "quantize")
    assert quantize["settings"]["scheme"] == "toy-int8" and quantize["settings"]["per_channel"] is False
    assert quantize["measured"]["quantized_ops"].get("MatMulInteger", 0) > 0  # onnxruntime's dynamic int8 ran
    metrics = manifest["metrics"]  # the final artifact's, scored by the toy adapter through the toy runtime model
    assert 50 < metrics["accuracy"] <= 100 and "cls_min_cosine" in metrics
    assert manifest["device_profile"] == "toy-1"

    verified = edgegolf(["verify", out], plugin_dir)  # the runtime opens it as the plugin's model
    assert verified.returncode == 0 and "cls-embedding graph loads and runs" in verified.stdout, verified.stderr
    shape = python(f"""
        import toy_task_runtime, sys
        from edgegolf.runtime import load
        model = load({str(out)!r})
        print(type(model).__name__, model.cls_vectors(["a headline", "another"]).shape, "torch" in sys.modules)
    """, plugin_dir)
    assert shape.split() == ["ClsEmbeddingModel", "(2,", "32)", "False"]  # an app needs no torch for it


def test_toy_task_distills_through_its_declared_hooks(plugin_dir, tiny_bert, pruned_folder, tmp_path):
    out = tmp_path / "distilled"
    spec = "steps=3,batch_size=4,max_length=32,eval_every=1,hidden_weight=0,refit=false,data=bbc-news"
    done = edgegolf(["-q", "distill", tiny_bert, pruned_folder, "-o", out, "--task", "cls-embedding", "--spec", spec],
                    plugin_dir)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "distill_report.json").read_text())
    assert report["task"] == "cls-embedding" and len(report["loss_history"]) == 3
    assert report["eval_history"] and all("cls_cosine" in entry for entry in report["eval_history"])


def test_toy_device_kind_is_listed_and_benches(plugin_dir, tiny_bert, tmp_path):
    listed = edgegolf(["devices"], plugin_dir)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("| toy-1 "))
    assert "| toy-board | 1 |" in row and "| yes |" in row and "a toy that runs on this CPU" in row
    assert "toy-1" not in edgegolf(["devices"], plugin_dir, plugins=None).stdout

    onnx_model = tmp_path / "bundle-for-bench"
    recipe = tmp_path / "quick.toml"
    recipe.write_text(QUICK_RECIPE)
    made = edgegolf(["-q", "compress", tiny_bert, "-o", onnx_model, "--recipe", recipe, "--quantize", "none",
                     "--optimize", "off"], plugin_dir)
    assert made.returncode == EXIT_FITS, made.stderr
    report = tmp_path / "bench.json"
    bench = edgegolf(["bench", onnx_model, "--device", "toy-1,cpu-1", "--seq", "16", "--runs", "20",
                      "--max-seconds", "1", "--no-cold-start", "--json", report], plugin_dir)
    assert bench.returncode == 0, bench.stderr
    devices = json.loads(report.read_text())["bench"]["devices"]
    toy = devices[0]
    assert toy["device"] == "toy-1" and toy["kind"] == "toy-board" and devices[1]["kind"] == "cpu"
    assert toy["runtime"]["providers"] == ["CPUExecutionProvider"] and toy["profile"]["threads"] == 1
    assert 0 < toy["shapes"][0]["latency"]["p50_ms"] < 1000


def test_toy_family_prunes_a_new_architecture(plugin_dir, tmp_path):
    source = save_tiny_megatron(tmp_path / "megatron")
    out = tmp_path / "pruned"
    args = ["prune", source, "--spec", "layers=2,heads=0.5,ffn=0.5", "-o", out, "--calibration-size", "8"]
    refused = edgegolf(args, plugin_dir, plugins=None)
    assert refused.returncode == EXIT_ERROR and "does not support model type 'megatron-bert'" in refused.stderr
    assert not out.exists()

    done = edgegolf(args, plugin_dir)
    assert done.returncode == 0, done.stderr
    config = json.loads((out / "config.json").read_text())
    assert (config["num_hidden_layers"], config["num_attention_heads"], config["intermediate_size"]) == (2, 2, 32)
    assert config["edgegolf_pruning"] == {"head_dim": 8}  # the head size stays 32 / 4; only the count halves
    report = json.loads((out / "prune_report.json").read_text())
    assert report["architecture"] == "megatron-bert"
    # a BertFamily subclass inherits layer_selection=auto's choice: measured importance
    assert report["config"]["layer_selection"] == "importance" and len(report["layer_removal"]) == 1
    assert report["kept_layers"] == [i for i in range(3) if i != report["layer_removal"][0]["removed"]]

    # the normalised view, the graph optimizer's dims and load_pruned all go through the toy family
    seen = python(f"""
        import toy_family, torch
        from transformers import AutoConfig
        from edgegolf.compression.prune import attention_dims, config_view, load_pruned
        config = AutoConfig.from_pretrained({str(out)!r})
        view = config_view(config)
        model = load_pruned({str(out)!r})
        with torch.inference_mode():
            hidden = model(input_ids=torch.tensor([[2, 10, 11, 3]])).last_hidden_state
        print(view.layers, view.heads, view.head_dim, view.ffn, attention_dims(config), tuple(hidden.shape))
    """, plugin_dir)
    assert seen.split("\n")[0] == "2 2 8 32 (2, 16) (1, 4, 32)"


def test_a_name_is_registered_once():
    """A second registration under a taken name is refused, and leaves the first in place."""
    from dataclasses import dataclass

    from edgegolf.compression.prune.arch import Family, register_family
    from edgegolf.compression.quantize import SCHEMES, Int4WeightOnly, register_scheme
    from edgegolf.devices.kinds import DeviceKind, get_kind, register_kind
    from edgegolf.runtime.models import TaskModel
    from edgegolf.tasks import register_task
    from edgegolf.tasks.base import TaskAdapter

    with pytest.raises(ValueError, match="'int4' is already registered"):
        register_scheme("int4")(dataclass(frozen=True)(type("Other", (), {})))
    with pytest.raises(ValueError, match="other than 'default'"):
        register_scheme("default")(dataclass(frozen=True)(type("Default", (), {})))
    assert SCHEMES["int4"] is Int4WeightOnly

    with pytest.raises(ValueError, match="'cpu' is already registered"):
        register_kind(type("OtherCpu", (DeviceKind,), {"name": "cpu"}))
    assert type(get_kind("cpu")).__name__ == "Cpu"

    with pytest.raises(ValueError, match="config_keys lacks"):
        register_family(type("Half", (Family,), {"name": "half", "model_types": ("half",), "config_keys": {}}))
    with pytest.raises(ValueError, match="'bert' is already pruned by"):
        from edgegolf.compression.prune.arch import supported_types

        supported_types()  # the built-ins are registered
        register_family(type("OtherBert", (Family,), {"name": "b", "model_types": ("bert",),
                                                      "config_keys": {"layers": "a", "heads": "b", "ffn": "c"}}))

    unregistered = type("Loose", (TaskModel,), {"task": "loose"})  # no @runtime_model
    with pytest.raises(ValueError, match="is not registered"):
        register_task(type("LooseAdapter", (TaskAdapter,), {"runtime_model": unregistered}))


def test_an_installed_distribution_registers_through_its_entry_point(plugin_dir, tmp_path):
    """The "edgegolf.plugins" entry-point group: what `pip install` of a plugin package sets up
    (https://packaging.python.org/en/latest/specifications/entry-points/), here as a dist-info on the path."""
    dist = tmp_path / "toy_board_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-board-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[edgegolf.plugins]\ntoy-board = toy_device\n")
    env = {k: v for k, v in os.environ.items() if k != "EDGEGOLF_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(plugin_dir), str(tmp_path)])
    listed = subprocess.run([sys.executable, "-m", "edgegolf", "devices"], capture_output=True, text=True, env=env,
                            timeout=300, check=False)
    assert listed.returncode == 0, listed.stderr
    assert any(line.startswith("| toy-1 | toy-board |") for line in listed.stdout.splitlines())

    (dist / "entry_points.txt").write_text("[edgegolf.plugins]\nbroken = no_such_module\n")
    broken = subprocess.run([sys.executable, "-m", "edgegolf", "devices"], capture_output=True, text=True, env=env,
                            timeout=300, check=False)
    assert broken.returncode == EXIT_ERROR and broken.stderr.strip() == (
        "error: plugin 'broken' (entry point 'no_such_module' of group edgegolf.plugins) failed to import: "
        "ModuleNotFoundError: No module named 'no_such_module'")
