"""Multi-task: several label columns (not all 0/1), one shared encoder and one head per column,
a weighted sum of the task losses, the mean of the tasks' metrics, every task predicted."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
import torch

import autotl
from autotl import multitask as mt
from autotl.data import Task, load_data
from autotl.errors import UsageError
from autotl.testing import sentiment_rows

from conftest import search_fails_with, write_csv  # noqa: E402

HEADER = ("text", "sentiment", "score")
SENTIMENT = mt.TaskSpec("sentiment", "classification", ("neg", "pos"))
SCORE = mt.TaskSpec("score", "regression", (), mean=0.5)


def two_task_csv(path, n: int = 60, seed: int = 0) -> str:
    """Sentiment (neg/pos, from the word lists) and a score in [0, 1] that follows it."""
    rng = random.Random(seed)
    rows = [(text, label, f"{(0.8 if label == 'pos' else 0.2) + rng.uniform(-0.1, 0.1):.3f}")
            for text, label in sentiment_rows(n, seed=seed, labels=("neg", "pos"))]
    return write_csv(path, rows, header=HEADER)


def test_listed_columns_not_all_binary_are_tasks_inferred_one_by_one(tmp_path):
    target = load_data(two_task_csv(tmp_path / "d.csv"), label_col="sentiment,score")
    assert target.task is Task.MULTITASK
    assert [(t.name, t.kind, t.label_names) for t in target.tasks] == [
        ("sentiment", "classification", ("neg", "pos")), ("score", "regression", ())]
    assert target.num_outputs == 3 and target.train.targets.shape == (len(target.train.texts), 2)
    assert target.tasks[1].mean == pytest.approx(float(target.train.targets[:, 1].mean()))
    assert target.schema()["tasks"][0]["label_names"] == ["neg", "pos"]


def test_binary_columns_stay_multilabel(tmp_path):
    rows = [(text, int(label == "pos"), int(label != "pos")) for text, label in sentiment_rows(30, labels=("neg", "pos"))]
    target = load_data(write_csv(tmp_path / "d.csv", rows, header=("text", "a", "b")), label_col="a,b")
    assert target.task is Task.MULTILABEL and target.tasks == ()


def test_the_model_has_one_head_per_task(tiny_model_dir):
    from autotl.model import Pooling, build_model

    model = build_model(tiny_model_dir, Pooling.MEAN, num_outputs=3, label_names=(), regression=False,
                        tasks=(SENTIMENT, SCORE))
    assert len(model.head_.heads) == 2
    features = torch.randn(4, model.config.hidden_size)
    outputs = model.head_.per_task(features)
    assert [tuple(o.shape) for o in outputs] == [(4, 2), (4, 1)]
    assert model.head_.heads[1].bias.item() == pytest.approx(0.5)  # the regression task starts at its mean
    ids, mask = torch.randint(1, model.config.vocab_size, (4, 7)), torch.ones(4, 7, dtype=torch.long)
    assert tuple(model(ids, mask).shape) == (4, 3)
    with pytest.raises(ValueError, match="mean-pooled"):
        build_model(tiny_model_dir, Pooling.STANDARD, num_outputs=3, label_names=(), regression=False,
                    tasks=(SENTIMENT, SCORE))


def test_the_loss_is_the_weighted_sum_of_the_task_losses():
    outputs = torch.tensor([[2.0, -1.0, 0.3], [0.5, 1.5, 0.9]])
    targets = torch.tensor([[0.0, 0.1], [1.0, 0.7]])
    ce = torch.nn.functional.cross_entropy(outputs[:, :2], torch.tensor([0, 1]))
    mse = ((0.3 - 0.1) ** 2 + (0.9 - 0.7) ** 2) / 2
    tasks = (SENTIMENT, SCORE)
    assert mt.loss(outputs, targets, tasks).item() == pytest.approx(ce.item() + mse, rel=1e-5)
    s = torch.tensor([0.5, -1.0])
    expected = np.exp(-0.5) * ce.item() + 0.5 + np.exp(1.0) * mse - 1.0
    assert mt.loss(outputs, targets, tasks, s).item() == pytest.approx(expected, rel=1e-5)


def test_a_regression_task_s_loss_is_its_mse_over_the_training_targets_variance(tmp_path):
    outputs = torch.tensor([[2.0, -1.0, 53.0], [0.5, 1.5, 41.0]])
    targets = torch.tensor([[0.0, 50.0], [1.0, 45.0]])
    wide = mt.TaskSpec("score", "regression", (), mean=47.5, scale=100.0)
    assert mt.task_losses(outputs, targets, (SENTIMENT, wide))[1].item() == pytest.approx((9.0 + 16.0) / 2 / 100.0)
    # read from the data: the training rows' variance, kept in autotl.json's task list
    rows = [(text, label, f"{50 + 10 * (label == 'pos') + i % 7 / 7:.3f}")
            for i, (text, label) in enumerate(sentiment_rows(60, labels=("neg", "pos")))]
    target = load_data(write_csv(tmp_path / "d.csv", rows, header=HEADER), label_col="sentiment,score")
    score = target.tasks[1]
    assert score.kind == "regression" and score.scale == pytest.approx(float(np.var(target.train.targets[:, 1])), rel=1e-5) and score.scale > 20
    assert mt.TaskSpec.from_json(score.as_json()) == score


def test_a_regression_task_s_first_loss_is_near_1_whatever_its_units():
    torch.manual_seed(0)
    features = torch.randn(256, 32) * 3.0
    for spread in (1e-3, 1.0, 1e3):
        task = mt.TaskSpec("score", "regression", (), mean=5.0 * spread, scale=spread ** 2)
        head = mt.build_head(32, (task,), dropout=0.0)
        targets = (5.0 + torch.randn(256)) * spread
        with torch.no_grad():
            first = mt.task_losses(head(features), targets[:, None], (task,))[0].item()
        assert 0.5 < first < 20.0, (spread, first)


def test_the_objective_is_the_mean_of_the_task_metrics_or_one_named_task():
    targets = np.array([[0, 0.0], [1, 1.0], [1, 2.0], [0, 3.0]], dtype=np.float32)
    predicted = np.array([[0, 0.0], [1, 1.0], [0, 2.0], [1, 4.0]], dtype=np.float32)  # accuracy 0.5
    r2 = 1 - 1.0 / 5.0  # residual 1, total 5 around the mean 1.5
    tasks = (SENTIMENT, SCORE)
    assert mt.task_metric(tasks, None)(targets, predicted) == pytest.approx((0.5 + r2) / 2)
    assert mt.task_metric(tasks, "sentiment:accuracy")(targets, predicted) == pytest.approx(0.5)
    assert mt.task_metric(tasks, "score:mae")(targets, predicted) == pytest.approx(0.25)
    assert not mt.task_metric(tasks, "score:mae").maximize
    assert mt.task_scores(targets, predicted, tasks) == {"sentiment": {"accuracy": 0.5},
                                                          "score": {"r2": pytest.approx(r2)}}
    outputs = np.array([[3.0, 1.0, 0.25], [0.0, 2.0, 0.75]])
    assert mt.decide(outputs, tasks).tolist() == [[0.0, 0.25], [1.0, 0.75]]
    with pytest.raises(UsageError, match="names no task"):
        mt.task_metric(tasks, "c:accuracy")


def test_a_tiny_search_predicts_every_task_and_loads(capsys, tmp_path, tiny_model_dir):
    from autotl.cli import main

    data, test = two_task_csv(tmp_path / "d.csv"), two_task_csv(tmp_path / "t.csv", 20, seed=3)
    run = tmp_path / "run"
    code = main(["search", data, "--model", tiny_model_dir, "--out", str(run), "--no-progress", "--test", test,
                 "--label-col", "sentiment,score", "--strategies", "linear_probe,full_finetune",
                 "--n-trials", "2", "--rescore", "0"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    info = json.loads((run / "best" / "autotl.json").read_text())
    assert info["data"]["task"] == "multitask" and info["metric"] == mt.MEAN_METRIC
    assert info["head"]["pooling"] == "mean" and info["head"]["multitask"] and not info["head"]["pipeline_compatible"]
    assert set(info["scores"]["tasks"]) == {"sentiment", "score"}
    assert info["params"][mt.WEIGHTING] in mt.WEIGHTINGS
    assert {"sentiment:accuracy", "score:r2", mt.MEAN_METRIC} <= set(info["scores"]["test"]["metrics"])
    preds = tmp_path / "preds.csv"
    assert main(["predict", str(run / "best"), test, "-o", str(preds), "--device", "cpu"]) == 0
    frame = pd.read_csv(preds)
    assert set(frame["sentiment"]) <= {"neg", "pos"} and frame["score"].dtype.kind == "f"
    assert np.allclose(frame["prob_sentiment_neg"] + frame["prob_sentiment_pos"], 1.0, atol=1e-5)
    model, tokenizer, loaded = autotl.load(run / "best", device="cpu")
    assert len(model.head_.heads) == 2 and loaded["data"]["tasks"][1]["task"] == "regression"
    # the loaded model's own outputs, split per task, are what predict wrote
    texts = pd.read_csv(test)["text"].tolist()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    import torch

    with torch.no_grad():
        split = autotl.task_outputs(model(batch["input_ids"], batch["attention_mask"]), loaded)
    assert set(split) == {"sentiment", "score"} and split["sentiment"].shape == (len(texts), 2)
    labels = loaded["data"]["tasks"][0]["label_names"]
    assert [labels[i] for i in split["sentiment"].argmax(dim=1).tolist()] == frame["sentiment"].tolist()
    assert np.allclose(split["score"].numpy(), frame["score"], atol=1e-4)
    with pytest.raises(autotl.UsageError, match="columns"):
        autotl.task_outputs(split["sentiment"], loaded)


def _one_class(d):
    rows = [(text, label, "same") for text, label in sentiment_rows(30)]
    return [write_csv(d / "d.csv", rows, header=("text", "sentiment", "topic")), "--label-col", "sentiment,topic"]


BAD = {  # case -> (data and flags, what the one error line says)
    "a task column with a single class": (_one_class, r"label column 'topic' .*only one class \('same'\)"),
    "a task column missing": (lambda d: [two_task_csv(d / "d.csv"), "--label-col", "sentiment,scor"],
                              "column 'scor' not found .*did you mean 'score'"),
    "a metric naming no task": (lambda d: [two_task_csv(d / "d.csv"), "--label-col", "sentiment,score", "--metric",
                                           "c:accuracy"], "names no task"),
    "a metric without its task": (lambda d: [two_task_csv(d / "d.csv"), "--label-col", "sentiment,score",
                                             "--metric", "accuracy"], "TASK:METRIC"),
    "a metric of the other kind": (lambda d: [two_task_csv(d / "d.csv"), "--label-col", "sentiment,score",
                                              "--metric", "score:accuracy"], "is for classification"),
    "the baseline recipe (the standard head) named": (
        lambda d: [two_task_csv(d / "d.csv"), "--label-col", "sentiment,score", "--strategies", "baseline"],
        "strategy 'baseline' cannot run on this data: .*one head per task"),
    "too few training rows after the split": (
        lambda d: [two_task_csv(d / "d.csv", n=6), "--label-col", "sentiment,score", "--val-frac", "0.5"],
        "only 2 rows left for training after splitting off 4 for validation"),
    "the standard head": (lambda d: [two_task_csv(d / "d.csv"), "--label-col", "sentiment,score",
                                     "--standard-head"], "--standard-head cannot train several task columns"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_multitask_input_is_one_error_line(capsys, no_training, tmp_path, tiny_model_dir, case):
    search_fails_with(capsys, tmp_path, tiny_model_dir, BAD[case])


def test_a_multitask_search_re_scores_its_finalists_on_folds(tmp_path, tiny_model_dir, caplog):
    """The default search re-scores tied finalists on cross-validation folds; a multi-task
    search's folds are cut by its classification task (decide.fold_rows)."""
    import logging

    caplog.set_level(logging.INFO, logger="autotl")
    result = autotl.search(two_task_csv(tmp_path / "d.csv"), model=tiny_model_dir, out=tmp_path / "run",
                           label_col="sentiment,score", strategies=["linear_probe"], n_trials=3,
                           rescore=1, refit=False, progress=False, pruner="none")  # probes: tied on 12 rows
    assert "re-scoring" in caplog.text and "on fold 1" in caplog.text
    assert result.decision and result.decision.get("rounds", 1) >= 1
    info = json.loads((result.best_model / "autotl.json").read_text())
    assert set(info["scores"]["tasks"]) == {"sentiment", "score"}


def test_a_search_optimizes_one_task_s_metric_when_named(capsys, tmp_path, tiny_model_dir):
    from autotl.cli import main

    run = tmp_path / "run"
    code = main(["search", two_task_csv(tmp_path / "d.csv"), "--model", tiny_model_dir, "--out", str(run),
                 "--no-progress", "--label-col", "sentiment,score", "--metric", "score:mae",
                 "--strategies", "linear_probe", "--n-trials", "2", "--rescore", "0", "--no-refit", "--pruner", "none"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    info = json.loads((run / "best" / "autotl.json").read_text())
    assert info["metric"] == "score:mae"
    board = json.loads((run / "leaderboard.json").read_text())
    done = [r for r in board if r["state"] == "complete"]
    # lower is better: the chosen trial has the smallest validation MAE of the score task
    assert info["trial"] == min(done, key=lambda r: r["score"])["trial"]
    assert len(done) == 2 and 0 <= info["scores"]["val"] < 0.5  # an MAE of scores in [0.1, 0.9], not an accuracy
