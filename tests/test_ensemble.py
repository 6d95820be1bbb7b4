"""Averaged-prediction ensembles: the combination, RUN_DIR/ensemble on disk, predict through it."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from autotl.ensemble import EnsembleModel, ensemble_scores, load_ensemble, save_ensemble
from autotl.testing import LABELS, tiny_setup

from conftest import write_csv

IDS = torch.tensor([[2, 5, 6, 17, 3], [2, 9, 3, 0, 0], [2, 11, 20, 8, 3]])
MASK = (IDS != 0).long()
DATA = {"task": "classification", "label_names": list(LABELS), "text_col": "text", "label_col": "label"}


def trained(model, seed: int):
    """`model` with its weights moved off the fresh init (each seed differently)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05)
        model.output_layer().weight.mul_(20)  # confident, different members
    return model.eval()


@pytest.fixture
def members(tiny_model):
    return [trained(tiny_model("mean"), 1), trained(tiny_model("standard"), 2), trained(tiny_model("mean"), 3)]


@pytest.fixture
def tokenizer(tiny_model_dir):
    from autotl.backbone import load_tokenizer

    return load_tokenizer(tiny_model_dir)


def regression_model(tiny_model_dir, pooling: str, target_mean: float, seed: int):
    from autotl.model import build_model

    model = build_model(tiny_model_dir, pooling, num_outputs=1, label_names=(), regression=True,
                        target_mean=target_mean)
    return trained(model, seed)


def save(run_dir, models, tokenizer, data=DATA):
    infos = [{"data": data, "trial": i, "scores": {"val": 0.5}} for i in range(len(models))]
    return save_ensemble(models, tokenizer, run_dir, infos, {"data": data, "scores": {"val": 0.9}}, max_length=32)


def test_ensemble_output_is_the_log_of_the_mean_probability(members):
    ensemble = EnsembleModel(members, regression=False).eval()
    with torch.no_grad():
        out = ensemble(IDS, MASK)
        probs = torch.stack([torch.softmax(m(IDS, MASK), dim=-1) for m in members])
    torch.testing.assert_close(out, probs.mean(0).log(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(torch.softmax(out, dim=-1), probs.mean(0), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(probs[0], probs[1], atol=1e-2)  # the members do disagree


def test_ensemble_scores_are_the_ensembles_validation_score(members, tiny_model_dir):
    from autotl.train import infer

    train, val, fit = tiny_setup(tiny_model_dir)
    from autotl.objective import TrialSetup

    setup = TrialSetup(backbone_path=tiny_model_dir, strategies={}, poolings=("mean",), train=train, val=val,
                       label_names=LABELS, num_outputs=2, fit=fit)
    score, predicted = ensemble_scores(setup, members)
    expected = infer(EnsembleModel(members, regression=False), val, pad_id=fit.pad_id, device="cpu").argmax(1)
    np.testing.assert_array_equal(predicted, expected)
    assert score == fit.metric(val.targets, expected)


def test_saved_ensemble_round_trips(members, tokenizer, tmp_path):
    from autotl.export import load_model

    path = save(tmp_path, members, tokenizer)
    assert path == tmp_path / "ensemble"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ensemble"]  # no temporary folder left
    meta = json.loads((path / "ensemble.json").read_text())
    assert meta["kind"] == "ensemble" and meta["members"] == ["member-0", "member-1", "member-2"]
    assert json.loads((path / "member-1" / "autotl.json").read_text())["head"]["pooling"] == "standard"

    with torch.no_grad():
        expected = EnsembleModel(members, regression=False)(IDS, MASK)
    for where in (tmp_path, path):
        loaded, loaded_tokenizer, info = load_model(where)
        assert isinstance(loaded, EnsembleModel) and not loaded.training
        with torch.no_grad():
            assert torch.equal(loaded(IDS, MASK), expected)
        assert info["kind"] == "ensemble" and info["max_length"] == 32 and info["data"] == DATA
        assert info["scores"]["val"] == 0.9  # ensemble.json over the first member's autotl.json
        assert loaded_tokenizer("good film")["input_ids"] == tokenizer("good film")["input_ids"]

    # Saving again replaces it whole (two members now). A swap cut between its two renames
    # (ensemble.old left, no ensemble/) is read in place: readers never rename; the next
    # writer restores it.
    save(tmp_path, members[:2], tokenizer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ensemble"]
    assert json.loads((path / "ensemble.json").read_text())["members"] == ["member-0", "member-1"]
    path.rename(tmp_path / "ensemble.old")
    loaded, _, _ = load_ensemble(tmp_path)
    assert len(loaded.members) == 2 and not path.exists() and (tmp_path / "ensemble.old").is_dir()
    save(tmp_path, members[:1], tokenizer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ensemble"]


def test_predict_on_a_run_dir_uses_its_ensemble(members, tiny_model, tokenizer, tmp_path):
    import autotl
    from autotl.batching import encode
    from autotl.export import load_model, save_best
    from autotl.testing import sentiment_rows
    from autotl.train import infer

    run = tmp_path / "run"
    run.mkdir()
    single = trained(tiny_model("mean"), 9)
    save_best(single, tokenizer, run, {"data": DATA, "trial": 0}, max_length=32)
    save(run, members, tokenizer)
    rows = sentiment_rows(12, seed=4)
    csv = write_csv(tmp_path / "new.csv", rows)

    texts = [t for t, _ in rows]
    encoded = encode(tokenizer, texts, np.zeros(len(texts)), 32, key="test-ensemble-predict")

    def probabilities(model):
        out = torch.from_numpy(infer(model, encoded, pad_id=tokenizer.pad_token_id, device="cpu"))
        return torch.softmax(out, dim=-1).numpy()

    ensemble_probs = probabilities(EnsembleModel(members, regression=False))
    best_probs = probabilities(single)
    assert not np.allclose(ensemble_probs, best_probs, atol=1e-3)

    frame = autotl.predict(run, csv, device="cpu")
    ours = frame[["prob_negative", "prob_positive"]].to_numpy()
    np.testing.assert_allclose(ours, ensemble_probs, atol=1e-5)
    assert frame["prediction"].tolist() == [LABELS[i] for i in ensemble_probs.argmax(1)]
    # best/ is still the single best model, and loads as one
    from_best = autotl.predict(run / "best", csv, device="cpu")
    np.testing.assert_allclose(from_best[["prob_negative", "prob_positive"]].to_numpy(), best_probs, atol=1e-5)
    assert not isinstance(load_model(run / "best")[0], EnsembleModel)


def test_regression_ensemble_averages_values(tiny_model_dir, tokenizer, tmp_path):
    from autotl.metrics import get_metric
    from autotl.objective import TrialSetup

    models = [regression_model(tiny_model_dir, "mean", 1.0, 1), regression_model(tiny_model_dir, "standard", 5.0, 2)]
    with torch.no_grad():
        outputs = [m(IDS, MASK) for m in models]
        out = EnsembleModel(models, regression=True)(IDS, MASK)
    assert out.shape == (3, 1)
    torch.testing.assert_close(out, (outputs[0] + outputs[1]) / 2)
    assert not torch.allclose(outputs[0], outputs[1], atol=0.5)

    data = {**DATA, "task": "regression", "label_names": []}
    save(tmp_path, models, tokenizer, data=data)
    loaded, _, info = load_ensemble(tmp_path)
    assert loaded.regression and info["data"]["task"] == "regression"
    with torch.no_grad():
        torch.testing.assert_close(loaded(IDS, MASK), out)

    train, val, fit = tiny_setup(tiny_model_dir)
    val = replace(val, targets=val.targets.astype(np.float32) * 4 + 1)
    fit = replace(fit, regression=True, metric=get_metric("mse", "regression"))
    setup = TrialSetup(backbone_path=tiny_model_dir, strategies={}, poolings=("mean",), train=train, val=val,
                       label_names=(), num_outputs=1, fit=fit)
    score, predicted = ensemble_scores(setup, models)
    from autotl.train import predict

    expected = (predict(models[0], val, fit) + predict(models[1], val, fit)) / 2
    np.testing.assert_allclose(predicted, expected, rtol=1e-5)
    assert score == pytest.approx(fit.metric(val.targets, expected))
