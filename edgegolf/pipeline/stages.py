"""The flow of `edgegolf compress`, declared once, in order:

    load -> prune -> distill -> export -> optimize -> quantize      (STAGES, below)
         then references (evaluate.compare), verdict, bundle          (compress.py)

One contract: a stage is a plain function `stage(artifact, config, context) -> (artifact,
measured)`. It takes the current artifact and its typed config (plus a small read-only
context: the task adapter, the evaluation split, where to write files, the teacher) and
returns a new artifact and a dict of what it found (never a time: stages that transform
models time nothing). It never changes the artifact it was given: a cache may hold it.

The runner (runner.py), not the stage, records provenance, measures the artifact (the
teacher after load, every new ONNX graph after export, optimize and quantize), and caches
each stage's result keyed by its input and its config.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from edgegolf.data import Split
from edgegolf.errors import SourceError
from edgegolf.measure.artifact import StageResult, weight_files
from edgegolf.recipe import Recipe
from edgegolf.runtime.spec import ModelSpec
from edgegolf.runtime.tokenize import make_tokenizer
from edgegolf.source import Source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Artifact:
    """What flows from stage to stage: a PyTorch model until export, then an ONNX graph beside it."""

    model: Any  # the PyTorch model: the teacher until pruned, then the student
    tokenizer: Any  # the model's Hugging Face tokenizer
    tokenizer_json: Path | None = None  # what the runtime reads (the teacher's until export)
    spec: ModelSpec | None = None  # inputs, outputs and padding of the graph (the teacher's until export)
    graph: Path | None = None  # the ONNX graph the next stage takes
    fp32: Path | None = None  # the plain export (references are made from it)
    export_report: Any = None
    prune_report: Any = None
    distill_report: Any = None
    outputs: Any = None  # the teacher's outputs on the split: every later score's reference


@dataclass(frozen=True)
class Context:
    """Read-only facts every stage may use; `work` is where this stage writes its files."""

    adapter: Any  # edgegolf.tasks.base.TaskAdapter
    split: Split
    source: Source
    task: str
    max_length: int  # export.max_length: truncation of every input
    atol: float  # export.atol: the largest difference to PyTorch a graph may show
    calibration_size: int  # train-split texts that calibrate pruning and static quantization
    trust_remote_code: bool
    allow_pickle: bool
    work: Path
    teacher: Artifact | None = None  # after load


@dataclass(frozen=True)
class LoadConfig:
    """What decides the teacher: the source, the task and the input length."""

    source: dict[str, Any]
    task: str
    max_length: int
    trust_remote_code: bool
    allow_pickle: bool


@dataclass
class Made:
    """A stage's fresh output after the runner measured it: what a review decides on."""

    before: Artifact | None
    artifact: Artifact
    config: Any
    measured: dict[str, Any]
    result: StageResult | None  # the measurement of the new graph (None: no new graph)
    earlier: list[StageResult]  # results of the stages before, in order
    context: Context
    measurer: Any = None  # edgegolf.measure.artifact.Measurer: a review that must time two graphs side by side


def _plain(config: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return config.to_dict() if hasattr(config, "to_dict") else asdict(config)


@dataclass(frozen=True)
class Stage:
    name: str  # the provenance record's name
    run: Callable[[Artifact | None, Any, Context], tuple[Artifact, dict[str, Any]]]
    config: Callable[[Recipe, Context], Any]  # the stage's typed config; None leaves the stage out
    group: str | None = "student"  # cache accounting (teacher | student); None: never cached
    measure: str | None = None  # "teacher", or the name of the result a new graph is measured as
    description: str = ""
    review: Callable[[Made], tuple[Artifact, dict[str, Any]]] | None = None  # decisions that need the measurement
    settings: Callable[[Any, Artifact], dict[str, Any]] = lambda config, artifact: _plain(config)
    reads: Callable[[Context], list[Path]] | None = None  # default: the input graph
    wrote: Callable[[Artifact], list[Path]] | None = None  # default: the output graph, when new
    # whether its graph's outputs for a text are the same alone or in a padded batch: then it
    # is evaluated in batches (edgegolf/measure/evaluate.py)
    batch_independent: Callable[[Any], bool] = lambda config: True


# --- load ----------------------------------------------------------------------------------
def load(_: None, config: LoadConfig, ctx: Context) -> tuple[Artifact, dict[str, Any]]:
    """The teacher, its tokenizer, and the graph inputs every later stage keeps."""
    from transformers import AutoTokenizer

    path = ctx.source.path
    teacher = ctx.adapter.load_model(path, trust_remote_code=config.trust_remote_code,
                                     allow_pickle=config.allow_pickle)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=config.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot load the tokenizer in {str(path)!r}: {str(exc).splitlines()[0]}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise SourceError(f"the tokenizer of {ctx.source.name!r} has no fast (tokenizer.json) version; the runtime "
                          "needs one")
    input_names = ctx.adapter.input_names(teacher, tokenizer)
    tokenizer_json = save_tokenizer(tokenizer, ctx.work / "teacher-tokenizer")
    spec = ctx.adapter.model_spec(teacher, tokenizer, input_names, config.max_length)
    return (Artifact(teacher, tokenizer, tokenizer_json, spec),
            {"parameters": int(sum(p.numel() for p in teacher.parameters()))})


def save_tokenizer(tokenizer, folder: Path) -> Path:
    tokenizer.save_pretrained(str(folder))
    return folder / "tokenizer.json"


# --- prune ---------------------------------------------------------------------------------
def prune(artifact: Artifact, config, ctx: Context) -> tuple[Artifact, dict[str, Any]]:
    """Structured pruning into a smaller student (a copy: the teacher stays whole)."""
    from edgegolf.compression.prune import prune_model

    calibration = list(ctx.split.train.texts[: ctx.calibration_size])
    student, tokenizer, report = prune_model(artifact.model, artifact.tokenizer, config,
                                             calibration_texts=calibration, max_length=ctx.max_length)
    log.info("pruned: %d -> %d parameters", report.params_before, report.params_after)
    return replace(artifact, model=student, tokenizer=tokenizer, prune_report=report), report.to_dict()


def _prune_config(recipe: Recipe, ctx: Context):
    return recipe.prune


# --- distill -------------------------------------------------------------------------------
def distill(artifact: Artifact, config, ctx: Context) -> tuple[Artifact, dict[str, Any]]:
    """The pruned student recovers from the teacher on transfer data (never the test split)."""
    from edgegolf.compression.distill.stage import distill_pruned

    teacher = ctx.teacher
    assert artifact.model is not teacher.model, "compress() refuses distill without prune"  # never train the teacher
    student = copy.deepcopy(artifact.model)  # trained in place; the pruned artifact stays as it was
    report = distill_pruned(
        teacher.model, student, artifact.tokenizer, ctx.adapter, config, split=ctx.split,
        kept_layers=artifact.prune_report.kept_layers if artifact.prune_report else None,
        teacher_tokenizer=teacher.tokenizer if artifact.tokenizer is not teacher.tokenizer else None)
    return replace(artifact, model=student, distill_report=report), report.record()


def _distill_config(recipe: Recipe, ctx: Context):
    return recipe.distill


# --- export --------------------------------------------------------------------------------
def export(artifact: Artifact, config, ctx: Context) -> tuple[Artifact, dict[str, Any]]:
    """The student (or the teacher) as a plain fp32 ONNX graph, checked against PyTorch."""
    tokenizer_json = save_tokenizer(artifact.tokenizer, ctx.work / "tokenizer")  # what the bundle ships
    spec = ctx.adapter.model_spec(artifact.model, artifact.tokenizer, artifact.spec.input_names, config.max_length)
    texts = list(ctx.split.train.texts[:8])
    # verification feeds: single texts and a padded batch of texts of different lengths
    encoder = make_tokenizer(tokenizer_json, spec)
    sample = encoder.encode(texts[:2])
    verify = [encoder.encode([texts[0]]), encoder.encode([texts[1][:200], texts[2], texts[3][:50]])]
    if config.exporter == "optimum":
        from edgegolf.export.optimum import export_with_optimum

        report = export_with_optimum(
            ctx.source.path, ctx.work / "optimum", task=spec.task, opset=config.opset,
            reference=lambda feeds: ctx.adapter.torch_outputs(artifact.model, feeds), verify_feeds=verify,
            atol=config.atol, input_names=list(spec.input_names), output_names=list(spec.output_names),
            trust_remote_code=ctx.trust_remote_code)
    else:
        report = ctx.adapter.export(artifact.model, ctx.work / "model-fp32.onnx", input_names=spec.input_names,
                                    output_names=spec.output_names, sample_feeds=sample, verify_feeds=verify,
                                    opset=config.opset, atol=config.atol)
    made = replace(artifact, tokenizer_json=tokenizer_json, spec=spec, graph=report.path, fp32=report.path,
                   export_report=report)
    return made, {"max_abs_diff": report.max_abs_diff}


def _describe_export(made: Made) -> tuple[Artifact, dict[str, Any]]:
    artifact, result = made.artifact, made.result
    result.notes.append(f"max abs diff to PyTorch {made.measured['max_abs_diff']:.2e}")
    if artifact.model is not made.context.teacher.model:
        result.description = "fp32 ONNX export of the pruned model" + (
            " after distillation" if artifact.distill_report else "")
    if artifact.distill_report:
        result.notes.append(artifact.distill_report.summary())
    return artifact, {}


# --- optimize ------------------------------------------------------------------------------
def optimize(artifact: Artifact, config, ctx: Context) -> tuple[Artifact, dict[str, Any]]:
    """onnxruntime's transformer fusions, checked against PyTorch; whether to keep them is the
    review's call, once the fused graph is timed."""
    if config.mode != "off" and ctx.adapter.name == "causal-lm":
        return _optimize_causal_lm(artifact, config, ctx)
    if config.mode == "off" or not ctx.adapter.optimizable:
        skipped = {} if config.mode == "off" else {"skipped": f"no verified fusions for {ctx.adapter.name} graphs"}
        return artifact, {"kept": False, **skipped}
    from edgegolf.compression.prune import attention_dims
    from edgegolf.compression.prune.arch import ort_model_type
    from edgegolf.export.onnx import verify_onnx
    from edgegolf.export.optimize import optimize_graph

    model_config = artifact.model.config
    num_heads, hidden_size = attention_dims(model_config)  # head-pruned models: the true attention width
    report = optimize_graph(artifact.graph, ctx.work / "model-optimized.onnx", model_type=ort_model_type(model_config),
                            num_heads=num_heads, hidden_size=hidden_size)
    encoder = make_tokenizer(artifact.tokenizer_json, artifact.spec)
    texts = list(ctx.split.train.texts[:4])
    diff = verify_onnx(report.path, lambda feeds: ctx.adapter.torch_outputs(artifact.model, feeds),
                       [encoder.encode(texts[:1]), encoder.encode([texts[1], texts[2][:80]])],
                       atol=ctx.atol, output_names=list(artifact.spec.output_names))
    return replace(artifact, graph=report.path), {"fused_ops": report.fused_ops, "max_abs_diff": diff}


def _optimize_causal_lm(artifact: Artifact, config, ctx: Context) -> tuple[Artifact, dict[str, Any]]:
    """LLaMA/Qwen2 decoders: the cached graph written with onnxruntime's fused ops; GPT-2: the
    traced graph through onnxruntime's optimizer. Either is checked against PyTorch on a padded
    batch (right and left) and a cached step. Mode auto keeps the traced graph when the check
    fails; mode on stops there."""
    from edgegolf.compression.prune.arch import ort_model_type
    from edgegolf.errors import ExportError
    from edgegolf.export.llm_fusions import decode_ratio, fusable, fuse_traced_causal_lm, write_fused_causal_lm

    model_config = artifact.model.config
    reason, traced_type = fusable(model_config), ort_model_type(model_config)
    if reason and traced_type == "bert":  # no family of ours names an optimizer model type for it
        return artifact, {"kept": False, "skipped": f"no fused graph: {reason}"}
    encoder = make_tokenizer(artifact.tokenizer_json, artifact.spec)
    texts = list(ctx.split.train.texts[:3])
    feeds = [encoder.encode(texts[:1]), encoder.encode([texts[1], texts[2][:80]])]
    out = ctx.work / "model-optimized.onnx"
    try:
        fused = (fuse_traced_causal_lm(artifact.graph, artifact.model, out, model_type=traced_type,
                                       verify_feeds=feeds, atol=ctx.atol) if reason else
                 write_fused_causal_lm(artifact.model, out, atol=ctx.atol, verify_feeds=feeds))
    except ExportError as exc:
        if config.mode == "on":
            raise
        log.warning("fused graph dropped: %s", exc)
        return artifact, {"kept": False, "skipped": f"fused graph failed its check: {exc}"}
    # what generation pays: one cached step, fused over traced (the review weighs it beside the prefill timing)
    ratio = decode_ratio(fused.path, artifact.graph, artifact.tokenizer_json, artifact.spec,
                         list(ctx.split.train.texts[:8]))
    return replace(artifact, graph=fused.path), {"fused_ops": fused.fused_ops, "max_abs_diff": fused.max_abs_diff,
                                                 "decode_ratio": ratio}


def _keep_if_faster(made: Made) -> tuple[Artifact, dict[str, Any]]:
    """mode auto keeps the fused graph unless it is measurably slower than the plain export.

    Encoders: the two graphs timed interleaved (devices/compare.py); the fused graph is dropped
    only when the whole 95% interval of its p50 ratio lies above 1. The stage timings alone,
    taken a minute apart on a shared machine, once dropped a fused graph that was not slower.
    On MiniLM (AVX2, one thread) the fusions do not pay for certain: side by side the fused
    graph timed 1.01x to 1.07x the export as the machine's load changed, and int8 of it 1.04x
    int8 of the unfused graph, so which graph ships can change with the load.
    Causal LMs: a decode step, which generation repeats (`decode_ratio`, timed in the stage)."""
    if made.result is None:
        return made.artifact, {}
    fp32 = made.earlier[-1]
    ratio = made.result.latency.p50_ms / fp32.latency.p50_ms
    decode = made.measured.get("decode_ratio")
    side_by_side = None
    if decode is not None:
        faster, timing = decode < 1, f"decode step p50 {decode:.2f}x; "
    else:
        side_by_side = made.measurer.interleaved_ratio(made.artifact.fp32, made.artifact.graph,
                                                       made.artifact.tokenizer_json, made.artifact.spec)
        if side_by_side is None:  # a profile that cannot time two graphs side by side: the stage timings decide
            faster, timing = ratio < 1, ""
        else:
            faster = side_by_side[1] <= 1  # not slower beyond the noise
            timing = (f"interleaved p50 {side_by_side[0]:.2f}x [{side_by_side[1]:.2f}, {side_by_side[2]:.2f}]; ")
    kept = made.config.mode == "on" or faster
    fused = ", ".join(f"{op} x{n}" for op, n in sorted(made.measured["fused_ops"].items())) or "nothing fused"
    verdict = "kept" if kept else "dropped: slower, later stages use the fp32 export"
    made.result.notes.append(f"{fused}; p50 {ratio:.2f}x the fp32 export; {timing}{verdict}")
    log.info("fused graph: p50 %.2fx the fp32 export; %s%s", ratio, timing, verdict)
    artifact = made.artifact if kept else replace(made.artifact, graph=made.artifact.fp32)
    measured: dict[str, Any] = {"kept": kept, "p50_ratio": ratio}
    if side_by_side is not None:
        measured["p50_ratio_interleaved"] = list(side_by_side)
    return artifact, measured


# --- quantize ------------------------------------------------------------------------------
def quantize(artifact: Artifact, config, ctx: Context) -> tuple[Artifact, dict[str, Any]]:
    """Post-training quantization of the graph (scheme "none": the graph as it is)."""
    from edgegolf.compression.quantize import NoQuant, seven_bit_weights
    from edgegolf.compression.quantize import quantize as quantize_graph

    if isinstance(config, NoQuant):
        return artifact, {}
    encoder = make_tokenizer(artifact.tokenizer_json, artifact.spec)
    calibration = [ctx.adapter.graph_feeds(encoder.encode([text]), artifact.model.config)
                   for text in ctx.split.train.texts[: ctx.calibration_size]]
    report = quantize_graph(artifact.graph, ctx.work / "model-quantized.onnx", config, calibration_feeds=calibration,
                            beside=[artifact.tokenizer_json])  # what a size limit counts beside the graph
    measured = {"quantized_ops": report.quantized_ops, "float_nodes": report.float_nodes, "excluded": report.excluded,
                **report.details}  # what the scheme chose: int4's mixed-precision plan (bits per layer)
    if "reduce_range" in report.settings:  # what "auto" chose on this machine's CPU, for the scheme that ran
        measured["seven_bit_weights"] = seven_bit_weights(report.settings["reduce_range"])
    return replace(artifact, graph=Path(report.path)), measured


def _describe_quantized(made: Made) -> tuple[Artifact, dict[str, Any]]:
    if made.result is not None:
        fp32 = next(r for r in made.earlier if r.name == "onnx-fp32")
        measured = made.measured
        choice = measured.get("scheme_choice")  # no scheme asked for: the size limit chose (quantize/choose.py)
        scheme = choice["scheme"] if choice else _quant_settings(made.config, made.artifact)["scheme"]
        made.result.description = f"{scheme} quantized"
        ops = ", ".join(f"{op} x{n}" for op, n in sorted(measured["quantized_ops"].items()))
        made.result.notes.append(f"{ops}; {len(measured['float_nodes'])} compute nodes stayed float; "
                                 f"p50 {made.result.latency.p50_ms / fp32.latency.p50_ms:.2f}x the fp32 export")
        if choice:
            made.result.notes.append(choice["summary"])
    return made.artifact, {}


def _quant_settings(config, artifact: Artifact) -> dict[str, Any]:
    from edgegolf.compression.quantize import config_to_dict

    return config_to_dict(config)


# --- the declared flow ---------------------------------------------------------------------
STAGES: tuple[Stage, ...] = (
    Stage("load", load, group="teacher", measure="teacher",
          config=lambda recipe, ctx: LoadConfig(ctx.source.to_dict(), ctx.task, recipe.export.max_length,
                                                ctx.trust_remote_code, ctx.allow_pickle),
          settings=lambda config, artifact: {"source": config.source, "task": config.task,
                                             "model_class": type(artifact.model).__name__},
          reads=lambda ctx: weight_files(ctx.source.path), wrote=lambda artifact: [artifact.tokenizer_json]),
    Stage("prune", prune, config=_prune_config),
    Stage("distill", distill, config=_distill_config,
          settings=lambda config, artifact: artifact.distill_report.config.to_dict()),  # with its layer map
    Stage("export", export, config=lambda recipe, ctx: recipe.export, measure="onnx-fp32",
          description="plain fp32 ONNX export", review=_describe_export,
          settings=lambda config, artifact: {"exporter": config.exporter, "opset": config.opset, "atol": config.atol,
                                             "max_length": artifact.spec.max_length}),
    Stage("optimize", optimize, config=lambda recipe, ctx: recipe.optimize, measure="onnx-optimized",
          description="onnxruntime transformer fusions", review=_keep_if_faster,
          settings=lambda config, artifact: {"mode": config.mode}),
    # not cached: its graph is the bundle's, and a search never repeats a trial's settings
    Stage("quantize", quantize, config=lambda recipe, ctx: recipe.quantize, group=None,
          measure="quantized", review=_describe_quantized, settings=_quant_settings,
          batch_independent=lambda config: getattr(type(config), "batch_independent", False)),  # the scheme's word
)


# --- references: artifacts measured beside the chain, for comparison ----------------------
def ort_quantize_dynamic(fp32: Path, work: Path) -> tuple[Path, str]:
    from onnxruntime.quantization import quantize_dynamic

    from edgegolf.compression.quantize.api import application_logging_kept

    path = work / "reference-ort-quantize-dynamic.onnx"
    with application_logging_kept():  # its advice to pre-process goes to our debug log, as in our own quantize
        quantize_dynamic(str(fp32), str(path))  # default arguments: what a user does by hand
    return path, "onnxruntime quantize_dynamic, default arguments"


REFERENCES: dict[str, Callable[[Path, Path], tuple[Path, str]]] = {"ort-quantize-dynamic": ort_quantize_dynamic}
