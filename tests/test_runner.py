"""The runner over the declared stages, on the tiny real model of conftest: the provenance
follows the declared order, and the stage cache reuses exactly the stages whose input and
config did not change (what a search's trials share)."""

from __future__ import annotations

import pytest

import edgegolf
from edgegolf.pipeline import STAGES, StageCache
from edgegolf.runtime import load
from tests.builders.recipes import QUICK

DISTILL = {"steps": 2, "batch_size": 8, "lr": 1e-3, "max_length": 32, "eval_every": 0}
STUDENT = {**QUICK, "prune": {"layers": 1, "heads": 0.5}, "distill": DISTILL}


@pytest.fixture(scope="module")
def runs(tiny_bert, tmp_path_factory):
    """Four compress runs sharing one cache that holds one student at a time."""
    folder = tmp_path_factory.mktemp("runner")
    cache = StageCache(folder / "cache", max_students=1)
    out = {}

    def run(name, recipe):
        out[name] = edgegolf.compress(str(tiny_bert), output=folder / name, recipe=recipe, cache=cache)
        out[name + ":stage_hits"] = dict(cache.stage_hits)
        out[name + ":entries"] = sorted(p.name for p in cache.folder.iterdir())

    run("first", {**STUDENT, "quantize": {"scheme": "int8-dynamic"}})
    run("again", {**STUDENT, "quantize": {"scheme": "int8-dynamic"}})
    run("fp16", {**STUDENT, "quantize": {"scheme": "fp16"}})
    run("other-student", {**STUDENT, "prune": {"layers": 1}, "quantize": {"scheme": "fp16"}})
    return cache, out


def _records(result) -> dict[str, dict]:
    return {r["stage"]: r for r in result.manifest["provenance"]}


def test_the_provenance_follows_the_declared_stage_list(runs):
    _, out = runs
    first = out["first"]
    assert [r["stage"] for r in first.manifest["provenance"]] == [stage.name for stage in STAGES]
    assert [s.name for s in first.stages] == ["teacher", "onnx-fp32", "onnx-optimized", "quantized"]
    for record in first.manifest["provenance"]:
        assert record["seconds"] >= 0 and "reused" not in record
    records = _records(first)
    assert records["distill"]["settings"]["steps"] == 2 and records["distill"]["measured"]["steps_run"] == 2
    assert records["export"]["output_sha256"]["model-fp32.onnx"]
    assert records["quantize"]["input_sha256"] and records["quantize"]["settings"]["scheme"] == "int8-dynamic"
    assert load(first.output).embed(["Shares rose."]).shape == (1, 32)


def test_the_same_recipe_again_reuses_the_teacher_and_the_student(runs):
    _, out = runs
    first, again = out["first"], out["again"]
    reused = {name for name, r in _records(again).items() if r.get("reused")}
    assert reused == {"load", "prune", "distill", "export", "optimize"}  # not quantize: never cached
    assert out["again:stage_hits"]["export"] == 1  # no second export
    for name in ("export", "optimize"):  # the same graphs, and the seconds they took when they ran
        assert _records(again)[name]["output_sha256"] == _records(first)[name]["output_sha256"]
        assert _records(again)[name]["seconds"] == _records(first)[name]["seconds"]
    assert again.stages[1].metrics == first.stages[1].metrics  # measured once
    assert again.stages[1].notes == first.stages[1].notes and "distilled 2 steps" in " ".join(again.stages[1].notes)


def test_a_changed_quantize_config_reuses_the_student_but_not_the_quantized_stage(runs):
    _, out = runs
    records = _records(out["fp16"])
    assert {name for name, r in records.items() if r.get("reused")} == {"load", "prune", "distill", "export",
                                                                          "optimize"}
    assert "reused" not in records["quantize"] and records["quantize"]["settings"]["scheme"] == "fp16"
    assert out["fp16:stage_hits"]["export"] == 2
    assert out["fp16"].final.name == "quantized" and "fp16" in out["fp16"].final.description
    assert out["fp16"].final.size.raw_bytes < out["first"].stages[1].size.raw_bytes  # a new graph, measured


def test_another_student_reuses_only_the_teacher_and_evicts_the_old_student(runs):
    cache, out = runs
    records = _records(out["other-student"])
    assert {name for name, r in records.items() if r.get("reused")} == {"load"}
    assert records["prune"]["settings"] == {"layers": 1}
    assert cache.hits == {"teacher": 3, "student": 2} and cache.misses == {"teacher": 1, "student": 2}
    assert cache.saved_seconds > 0
    # max_students=1: the first student's stages (and their files) are gone, the new one's are kept
    before, after = out["fp16:entries"], out["other-student:entries"]
    assert [e for e in before if e.startswith("export-")] != [e for e in after if e.startswith("export-")]
    assert len([e for e in after if e.startswith("export-")]) == 1
    assert [e for e in before if e.startswith("load-")] == [e for e in after if e.startswith("load-")]


def test_the_cache_keeps_a_students_stages_together_and_counts_whole_groups(tmp_path):
    """Without models: the bookkeeping alone (keys, recency, eviction by student, tallies)."""
    from edgegolf.pipeline.runner import Done
    from edgegolf.pipeline.stages import Artifact

    cache = StageCache(tmp_path, max_students=1)
    assert StageCache.key("root", "export", {"opset": 17}) == StageCache.key("root", "export", {"opset": 17})
    assert StageCache.key("root", "export", {"opset": 17}) != StageCache.key("root", "export", {"opset": 18})
    assert StageCache.key("root", "export", {"opset": 17}) != StageCache.key("other", "export", {"opset": 17})

    def put(key, input_key, group, model):
        (tmp_path / key).mkdir()
        cache.put(key, group, Done(Artifact(model, None), {"stage": key}, [], 1.5, input_key))

    teacher, student_a, student_b = object(), object(), object()
    put("load-1", "root", "teacher", teacher)
    put("prune-a", "load-1", "student", student_a)
    put("distill-a", "prune-a", "student", object())  # a second model of the chain being made: kept
    put("export-a", "distill-a", "student", student_a)
    assert cache.get("export-a", "export").record == {"stage": "export-a"} and cache.saved_seconds == 1.5
    put("prune-b", "load-1", "student", student_b)  # a new student: the old one goes, with its files
    assert cache.get("export-a", "export") is None and cache.get("prune-a", "prune") is None
    assert not (tmp_path / "distill-a").exists() and (tmp_path / "prune-b").exists()
    assert cache.get("load-1", "load") is not None  # the teacher is not a student
    assert cache.stage_hits == {"export": 1, "load": 1} and cache.stage_misses == {"export": 1, "prune": 1}
    cache.tally({"teacher": True, "student": False})
    assert cache.hits == {"teacher": 1, "student": 0} and cache.misses == {"teacher": 0, "student": 1}
