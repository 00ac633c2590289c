"""Property-based fuzzing (hypothesis) of what reads untrusted input: the recipe and budget
parsers, and the runtime's bundle loader. Whatever they are fed, the only exceptions that
may come out are edgegolf's documented errors (`EdgegolfError` subclasses) with a one-line
message; anything else (a KeyError, a TypeError, an onnxruntime or tokenizers exception)
is a crash this test is here to find.

Bounded for CI: a fixed number of examples per test with a fixed seed (about 20 s in all).
For a longer hunt: EDGEGOLF_FUZZ_EXAMPLES=5000 EDGEGOLF_FUZZ_RANDOM=1 pytest tests/test_fuzz.py
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgegolf.errors import EdgegolfError

EXAMPLES = int(os.environ.get("EDGEGOLF_FUZZ_EXAMPLES", "120"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize=not os.environ.get("EDGEGOLF_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def only_documented_errors(call):
    """Run `call`; it may return or raise an EdgegolfError with a one-line message, nothing else."""
    try:
        return call()
    except EdgegolfError as exc:
        message = str(exc)
        assert message and "\n" not in message, f"{type(exc).__name__} message is not one line: {message!r}"
    return None


def numbers_in(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from numbers_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from numbers_in(item)
    elif isinstance(value, float):
        yield value


def accepted_values_are_finite(built) -> None:
    """What a recipe or budget accepts is a finite number: NaN or inf would pass every limit check."""
    if built is not None:
        recipe, budget = built
        values = [*numbers_in(recipe.to_dict()), *numbers_in(budget.to_dict())]
        assert all(math.isfinite(v) for v in values), (recipe, budget)


# --- values a user can write ------------------------------------------------------------------
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -math.inf, -1, 0, 0.5]),
    st.text(max_size=12),
    st.sampled_from(["int4", "int8-dynamic", "default", "none", "cpu-1", "bbc-news", "mean", "auto", "train-split"]),
)
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 300),
                    st.sampled_from([math.nan, math.inf, -math.inf]))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)

SECTION_FIELDS = {
    "export": ["exporter", "opset", "max_length", "atol"],
    "optimize": ["mode"],
    "quantize": ["scheme", "per_channel", "exclude", "block_size", "method", "symmetric", "accuracy_level"],
    "evaluate": ["data", "limit", "test_fraction", "seed", "calibration_size", "batch", "compare"],
    "bench": ["device", "also", "batch", "seq", "runs", "warmup", "max_seconds"],
    "prune": ["layers", "heads", "ffn", "vocab", "unstructured", "layer_selection", "importance"],
    "distill": ["steps", "lr", "batch_size", "data", "temperature", "hidden_weight"],
    "budget": ["size_mb", "zstd_mb", "p50_ms", "p95_ms", "memory_mb", "max_accuracy_drop"],
}


@st.composite
def recipe_tables(draw):
    """Mostly-plausible recipes: real section and field names with random values, plus strays."""
    table = {}
    for section in draw(st.lists(st.sampled_from([*SECTION_FIELDS, "task", "stray"]), max_size=4, unique=True)):
        if section == "task":
            table["task"] = draw(st.one_of(st.sampled_from(["feature-extraction", "text-classification"]), scalars))
        elif section == "stray" or draw(st.integers(0, 9)) == 0:
            table[draw(st.text(max_size=8))] = draw(json_values)
        else:
            names = SECTION_FIELDS[section] + ["stray"]
            table[section] = {name: draw(st.sampled_from([numbers, scalars, json_values]))
                              for name in draw(st.lists(st.sampled_from(names), max_size=4, unique=True))}
    return table


def toml_value(value) -> str:
    """A TOML rendering of a JSON-like value (json strings and numbers are TOML too)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(value), repr(value))
    if isinstance(value, (int, str)):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items() if v is not None) + "}"
    return '""'


def toml_text(table: dict) -> str:
    lines = []
    for key, value in table.items():
        if not isinstance(value, dict) and value is not None:
            lines.append(f"{json.dumps(key)} = {toml_value(value)}")
    for key, value in table.items():
        if isinstance(value, dict):
            lines.append(f"[{json.dumps(key)}]")
            lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items() if v is not None]
    return "\n".join(lines) + "\n"


@st.composite
def mutated_text(draw, text: str):
    """`text` with a few characters deleted, inserted or replaced."""
    chars = list(text)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(chars)))
        action = draw(st.sampled_from(["delete", "insert", "replace"]))
        if action == "delete" and at < len(chars):
            del chars[at]
        elif action == "insert":
            chars.insert(at, draw(st.sampled_from(list("[]{}=\"',.-\n#0123456789abz \\\x00é"))))
        elif at < len(chars):
            chars[at] = draw(st.characters())
    return "".join(chars)


GOOD_RECIPE = toml_text({
    "task": "feature-extraction",
    "prune": {"layers": 1, "heads": 0.5},
    "export": {"opset": 17, "max_length": 64},
    "quantize": {"scheme": "int4", "block_size": 32},
    "evaluate": {"limit": 40, "compare": ["ort-quantize-dynamic"]},
    "bench": {"device": "cpu-2", "also": ["cpu-1"], "runs": 20},
    "budget": {"size_mb": 12, "p50_ms": 8},
})


# --- (a) recipes and budgets --------------------------------------------------------------------
def _build(recipe=None, budget=None, overrides=None):
    from edgegolf.pipeline import build_recipe

    return lambda: build_recipe(recipe, budget=budget, overrides=overrides)


@FUZZ
@given(recipe_tables())
def test_recipe_dicts(table):
    accepted_values_are_finite(only_documented_errors(_build(recipe=table)))


@FUZZ
@given(st.one_of(st.builds(toml_text, recipe_tables()), mutated_text(GOOD_RECIPE), st.text(max_size=200)))
def test_recipe_toml_files(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "recipe.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        accepted_values_are_finite(only_documented_errors(_build(recipe=path)))


budget_terms = st.builds(
    lambda key, op, number, unit, space: f"{key}{space}{op}{space}{number}{unit}",
    st.sampled_from(["size", "zstd", "p50", "p95", "memory", "drop", "speed", "SIZE", ""]),
    st.sampled_from(["<=", "=", "<", ">=", "=="]),
    st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(str), st.integers().map(str), st.text(max_size=4)),
    st.sampled_from(["", "MB", "mb", "ms", "GB", "pt", "points", "%"]),
    st.sampled_from(["", " "]),
)


@FUZZ
@given(st.one_of(st.lists(budget_terms, max_size=4).map(",".join), st.text(max_size=40),
                 st.dictionaries(st.sampled_from(SECTION_FIELDS["budget"] + ["x"]), st.one_of(numbers, scalars),
                                 max_size=3)))
def test_budgets(budget):
    accepted_values_are_finite(only_documented_errors(_build(budget=budget)))


spec_terms = st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["layers", "heads", "ffn", "steps", "lr", "data", "x"]),
                       st.one_of(st.integers().map(str), numbers.map(str), st.text(max_size=5)))


@FUZZ
@given(st.one_of(st.lists(spec_terms, max_size=4).map(",".join), st.text(max_size=30),
                 st.builds(lambda rest: ",".join(["steps=5", *rest]), st.lists(spec_terms, max_size=3))))
def test_prune_and_distill_specs(text):
    from edgegolf.compression.distill import parse_distill_spec
    from edgegolf.compression.prune import parse_prune_spec

    for parse in (parse_prune_spec, parse_distill_spec):
        config = only_documented_errors(lambda parse=parse: parse(text))
        if config is not None:
            assert all(math.isfinite(v) for v in numbers_in(config.to_dict())), config


# --- (b) the runtime's bundle loader ------------------------------------------------------------
@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    from tests.builders.bundles import build_bundle

    return build_bundle(tmp_path_factory.mktemp("fuzz") / "bundle").folder


def _load_and_run(folder: Path):
    def call():
        from edgegolf.runtime import load

        model = load(folder, threads=1)
        model.run(model.encode(["the bank shares fell", ""]))
    return call


def _relist(folder: Path) -> None:
    """Re-hash every file, so that the loader's later checks (not the hash) meet the damage."""
    from edgegolf.runtime.manifest import write_manifest

    manifest = json.loads((folder / "manifest.json").read_text())
    write_manifest(folder, {k: v for k, v in manifest.items() if k not in ("files", "format", "format_version")})


# keys the loader reads somewhere (causal-lm's among them): an added one reaches deeper code
KNOWN_KEYS = ["past_inputs", "present_outputs", "kv_heads", "head_dim", "eos_token_id", "extra", "labels", "pooling",
              "normalize", "model", "files", "sha256", "vocab", "unk_token", "truncation", "padding", "added_tokens"]


@st.composite
def json_mutation(draw, document):
    """`document` with one value somewhere inside replaced, removed, or a key added."""
    document = json.loads(json.dumps(document))
    node, path = document, []
    while isinstance(node, (dict, list)) and node and draw(st.integers(0, 3)) > 0:
        key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
        path.append(key)
        node = node[key]
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    action = draw(st.sampled_from(["replace", "delete", "add"]))
    if not path or action == "add":
        target = parent if not path else node
        if isinstance(target, dict):
            target[draw(st.one_of(st.text(max_size=10), st.sampled_from(KNOWN_KEYS)))] = draw(json_values)
        elif not path:
            return draw(json_values)
        else:
            parent[path[-1]] = draw(json_values)
    elif action == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values)
    return document


@FUZZ
@given(st.data())
def test_mutated_manifests(pristine, data):
    manifest = json.loads((pristine / "manifest.json").read_text())
    mutated = data.draw(json_mutation(manifest))
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(shutil.copytree(pristine, Path(scratch) / "bundle"))
        (folder / "manifest.json").write_text(json.dumps(mutated))
        only_documented_errors(_load_and_run(folder))


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_as_manifest(pristine, blob):
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(shutil.copytree(pristine, Path(scratch) / "bundle"))
        (folder / "manifest.json").write_bytes(blob)
        only_documented_errors(_load_and_run(folder))


@st.composite
def mutated_bytes(draw, blob: bytes):
    data = bytearray(blob)
    action = draw(st.sampled_from(["flip", "truncate", "insert", "random"]))
    if action == "truncate":
        return bytes(data[: draw(st.integers(0, len(data)))])
    if action == "random":
        return draw(st.binary(max_size=400))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data) - 1))
        if action == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


@FUZZ
@given(st.data())
def test_mutated_onnx_graphs(pristine, data):
    blob = data.draw(mutated_bytes((pristine / "model.onnx").read_bytes()))
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(shutil.copytree(pristine, Path(scratch) / "bundle"))
        (folder / "model.onnx").write_bytes(blob)
        _relist(folder)
        only_documented_errors(_load_and_run(folder))


@FUZZ
@given(st.data())
def test_mutated_tokenizers(pristine, data):
    tokenizer = json.loads((pristine / "tokenizer.json").read_text())
    mutated = data.draw(st.one_of(json_mutation(tokenizer), st.binary(max_size=200)))
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(shutil.copytree(pristine, Path(scratch) / "bundle"))
        path = folder / "tokenizer.json"
        path.write_bytes(mutated) if isinstance(mutated, bytes) else path.write_text(json.dumps(mutated))
        _relist(folder)
        only_documented_errors(_load_and_run(folder))
