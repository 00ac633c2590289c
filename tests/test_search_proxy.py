"""The search's cheap proxy: a candidate asking for distillation is first built and measured
undistilled (refit-only); one whose size, latency or memory already breaks the budget is
rejected there and never distilled. Real searches on a tiny model; what ran is read from each
trial's compress provenance."""

from __future__ import annotations

import pytest

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

from edgegolf.search import SearchSpace, search  # noqa: E402
from tests.builders.search import QUICK_TOML  # noqa: E402

DISTILL = "steps=2,batch_size=8,lr=1e-3,max_length=32,eval_every=0,refit_texts=16"
# every trial but the baseline is a pruned student asking for distillation
SPACE = SearchSpace(min_layers=1, heads=(1.0,), ffn=(0.5,), vocab=(0,), schemes=("int8-dynamic",))


def _search(model, tmp_path, budget: str):
    recipe = tmp_path / "quick.toml"
    recipe.write_text(QUICK_TOML, encoding="utf-8")
    out = tmp_path / "out"
    result = search(str(model), output=out, budget=budget, trials=2, recipe=recipe, space=SPACE,
                    distill=DISTILL, always_distill=True, seed=0)
    storage = f"sqlite:///{tmp_path / 'out.search.db'}"
    trials = optuna.load_study(study_name="edgegolf-out", storage=storage).get_trials(states=(TrialState.COMPLETE,))
    return result, [t for t in trials if t.params.get("distill")]


def test_a_candidate_the_proxy_rejects_is_never_distilled(tiny_bert, tmp_path):
    result, asked = _search(tiny_bert, tmp_path, "size<=0.001MB")
    assert asked, "the space asks every pruned student for distillation"
    for trial in asked:
        assert "distill" not in trial.user_attrs["stages"]  # the distill stage never ran for it
        assert "prune" in trial.user_attrs["stages"] and "quantize" in trial.user_attrs["stages"]
        assert trial.user_attrs["rejected_by_proxy"].startswith("size ")
        assert "exceeds 0.001 MB" in trial.user_attrs["rejected_by_proxy"]
    record = next(r for r in result.records if r.number == asked[0].number)
    assert record.rejected_by_proxy and "distillation rejected by proxy" in record.label()


def test_a_candidate_the_proxy_passes_is_distilled_and_keeps_its_proxy_numbers(tiny_bert, tmp_path):
    _, asked = _search(tiny_bert, tmp_path, "size<=50MB")
    assert asked
    for trial in asked:
        assert "rejected_by_proxy" not in trial.user_attrs
        assert "distill" in trial.user_attrs["stages"]  # the control: distillation does run when it may fit
        proxy = trial.user_attrs["proxy"]
        assert "distill" not in proxy["stages"]
        # distillation moves accuracy, not bytes: the proxy's size is the distilled student's
        assert proxy["measured"]["size_mb"] == pytest.approx(trial.user_attrs["measured"]["size_mb"], rel=0.02)
