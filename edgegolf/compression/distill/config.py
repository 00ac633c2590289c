"""How to distill: `DistillConfig`, from a spec string (CLI) or a table (TOML recipe).

Both forms go through `distill_config_from_dict`, so they accept the same things and fail
with the same one-line messages (field, value, what would be accepted). Imports no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edgegolf.compression.spec import spec_terms, spec_value
from edgegolf.errors import RecipeError
from edgegolf.settings import Rule, check_instance, table_of, validate, with_rules

SCHEDULES = ("linear", "cosine", "constant")
LOSSES = ("cosine", "mse")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_DATA = "train-split"
SPEC_FORM = "steps=600,data=bbc-news,lr=1e-3"
_DATA = "give train-split, bbc-news, or a path to a .txt/.jsonl/.csv/.parquet file or a saved datasets folder"


def _count(low: int, what: str, *, optional: bool = False) -> Rule:
    return Rule(kind="int", minimum=low, optional=optional, accepts=f"give {what}, an integer >= {low}")


def _share(name: str, low: float, high: float | None, what: str, *, open_low: bool = False) -> Rule:
    bound = f"{low} < {name}" if open_low else f"{low} <= {name}"
    accepts = f"give {what}, {bound}" + (f" <= {high}" if high is not None else "")
    return Rule(kind="float", minimum=None if open_low else low, above=low if open_low else None, maximum=high,
                accepts=accepts)


# Each field's rule, kept beside the class so that the field lines stay plain defaults.
_RULES = {
    "steps": _count(1, "the number of optimizer steps"),
    "batch_size": _count(1, "the texts per forward pass"),
    "lr": _share("lr", 0.0, 1.0, "the peak learning rate", open_low=True),
    "warmup": _share("warmup", 0.0, 1.0, "the fraction of steps spent warming up"),
    "schedule": Rule(kind="str", choices=SCHEDULES),
    "grad_accum": _count(1, "the batches per optimizer step"),
    "max_length": _count(8, "the tokens kept per text"),
    "loss": Rule(kind="str", choices=LOSSES),
    "hidden_weight": _share("hidden_weight", 0.0, None, "the weight of the hidden-state loss"),
    "temperature": _share("temperature", 0.0, None, "the softmax temperature", open_low=True),
    "label_weight": _share("label_weight", 0.0, 1.0, "the share of the hard-label loss"),
    "eval_every": _count(0, "steps between evaluations (0: none)", optional=True),
    "eval_fraction": _share("eval_fraction", 0.0, 0.5, "the share of transfer texts held out", open_low=True),
    "patience": _count(1, "evaluations without improvement before stopping", optional=True),
    "checkpoint_every": _count(0, "steps between checkpoints (0: none)"),
    "seed": _count(0, "the random seed"),
    "precision": Rule(kind="str", choices=PRECISIONS),
    "device": Rule(kind="str", choices=DEVICES),
    "weight_decay": _share("weight_decay", 0.0, 1.0, "the AdamW weight decay"),
    "teacher_cache": Rule(kind="bool"),
    "dropout": Rule(kind="bool"),
    "freeze_embeddings": Rule(kind="bool"),
    "windows": _count(1, "the windows of max_length tokens used per text"),
    "window_stride": _count(0, "the tokens between window starts (0: the window length)"),
    "refit": Rule(kind="bool"),
    "refit_texts": _count(1, "the texts the refit solves on"),
    "log_every": _count(1, "steps between progress lines", optional=True),
    "threads": _count(0, "the torch threads of CPU training (0: half the cores)"),
}


@with_rules(_RULES)
@dataclass(frozen=True)
class DistillConfig:
    """What a distillation run does. Only `steps` has no default.

    `steps` counts optimizer updates; each sees batch_size x grad_accum texts. `warmup` is the
    fraction of the steps with a linearly rising learning rate. `layer_map` gives, for each
    student layer in order, the teacher layer (0-based) whose output it should match ("auto":
    evenly spaced, last to last); used only when hidden_weight > 0. `eval_every` None means
    ten evaluations per run, 0 none; `patience` counts evaluations without improvement before
    stopping (None: never stop early). `checkpoint_every` 0 writes no checkpoints.

    The defaults are the best settings measured (benchmarks/distill_minilm.py: MiniLM cut to
    3 layers, half its heads and FFN, reaches fidelity 0.90 in 1700 steps, 14 CPU minutes on a
    CPU with AVX512-BF16; on an AVX2-only CPU its fp32 steps would take about 23 CPU minutes
    (estimated from a step's parts), and batch 8 there, 16 minutes, reached fidelity 0.874: see the README):
    lr 1e-3 on a cosine schedule after 6 % warmup, the hidden-state loss (hidden_weight 1: where
    the student's width or tokenizer differs from the teacher's it falls to 0, logged), frozen
    embeddings, 4 windows of each long text, no dropout, a least-squares refit on 512 texts
    first, and precision "auto": bf16 autocast on GPUs that have it (else fp16) and on CPUs that
    compute bf16 in hardware (AVX512-BF16 or AMX), fp32 on other CPUs (emulated bf16 cost 10x
    the CPU time of fp32 per step on an AVX2-only EPYC).
    So `steps=N` is all a user needs to give.
    """

    steps: int
    batch_size: int = 16
    lr: float = 1e-3
    warmup: float = 0.06
    schedule: str = "cosine"
    grad_accum: int = 1
    max_length: int = 128
    loss: str = "cosine"  # feature-extraction: the loss on pooled embeddings
    hidden_weight: float = 1.0  # weight of the MSE between mapped hidden states
    layer_map: str | tuple[int, ...] = "auto"
    temperature: float = 2.0  # text-classification: softening of both models' logits
    label_weight: float = 0.5  # text-classification: share of the hard-label loss where labels exist
    data: str = DEFAULT_DATA
    column: str | None = None
    eval_every: int | None = None
    eval_fraction: float = 0.05  # share of the transfer texts held out for evaluation
    patience: int | None = None
    checkpoint_every: int = 0
    seed: int = 0
    precision: str = "auto"
    device: str = "auto"
    weight_decay: float = 0.01
    teacher_cache: bool = True  # keep the teacher's per-text targets between epochs (up to 4 GiB)
    dropout: bool = False  # False trains the student with dropout off: faster fitting on little data
    freeze_embeddings: bool = True  # keep the token embeddings as they are (the teacher's, after pruning)
    windows: int = 4  # train on up to this many max_length-token windows of each long text, not its start only
    window_stride: int = 0  # tokens between the starts of later windows; 0: one window length (no overlap)
    refit: bool = True  # least-squares repair of the pruned layers' output projections before training (refit.py)
    refit_texts: int = 512  # train texts the refit solves on
    log_every: int | None = None  # progress line every N steps; None: about 20 lines per run
    # torch threads while training on the CPU; 0: half the cores (edgegolf.measure.evaluate.work_threads,
    # 1 on 2 cores). CPU time counts every thread, and a second one that spins costs it: on a 2-core
    # AVX2 EPYC beside other work, a step of MiniLM cut to layers=3,heads=0.5,ffn=0.5 (16 x 128
    # tokens, fp32) cost 0.66 s CPU on 1 thread and 3.1 s on 2 (AdamW alone 0.02 s against 1.2 s)
    threads: int = 0

    def __post_init__(self) -> None:
        check_instance(self, "distill")

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (the provenance record and a checkpoint's identity)."""
        out = asdict(self)
        if isinstance(self.layer_map, tuple):
            out["layer_map"] = list(self.layer_map)
        return out

    @property
    def evaluations_every(self) -> int:
        if self.eval_every is None:
            return max(1, self.steps // 10)
        return self.eval_every


def _layer_map(value: Any) -> str | tuple[int, ...]:
    rule = 'give "auto" or the teacher layer (0-based) for each student layer, e.g. [0, 3, 5] or "0;3;5"'
    if value == "auto":
        return "auto"
    if isinstance(value, str):
        parts = [p.strip() for p in value.replace(";", " ").split()]
        try:
            value = [int(p) for p in parts]
        except ValueError:
            raise RecipeError(f"distill.layer_map = {value!r} is not accepted; {rule}") from None
    if not isinstance(value, (list, tuple)) or not value or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value):
        raise RecipeError(f"distill.layer_map = {value!r} is not accepted; {rule}")
    return tuple(value)


def distill_config_from_dict(data: Any) -> DistillConfig:
    """Validate a [distill] table (the spec string goes through here too)."""
    table = table_of("distill", data, DistillConfig, label="distill", example='{steps = 600, data = "bbc-news"}')
    if table.get("steps") is None:
        raise RecipeError(f"distill.steps is missing; give the number of optimizer steps, e.g. {SPEC_FORM}")
    given: dict[str, Any] = {}
    if "layer_map" in table:
        given["layer_map"] = _layer_map(table.pop("layer_map"))
    for name in ("data", "column"):
        value = table.pop(name, None)
        if value is not None:
            if not isinstance(value, str) or not value.strip():
                accepted = _DATA if name == "data" else "give the name of the text column"
                raise RecipeError(f"distill.{name} = {value!r} is not accepted; {accepted}")
            given[name] = value.strip()
    for name in ("eval_every", "log_every", "patience"):  # None: the default behaviour
        if name in table and table[name] is None:
            del table[name]
    return validate(DistillConfig, table, "distill", given=given)


def parse_distill_spec(text: str) -> DistillConfig:
    """Parse the CLI form, e.g. "steps=600,data=bbc-news,lr=1e-4" (paths may not hold commas)."""
    table: dict[str, Any] = {key: raw if key in ("data", "column", "layer_map") else spec_value(raw, none_word=True)
                             for key, raw in spec_terms(text, "distill", SPEC_FORM).items()}
    return distill_config_from_dict(table)
