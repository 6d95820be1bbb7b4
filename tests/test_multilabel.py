"""Multi-label classification: label sets in, a sigmoid head trained with BCE, micro/macro F1
and subset accuracy, one decision threshold tuned on validation, label sets out of predict."""

from __future__ import annotations

import csv
import json
import logging
import random

import numpy as np
import pandas as pd
import pytest
import torch

import autotl
from autotl import multilabel as ml
from autotl.data import Task, load_data
from autotl.errors import DataError, UsageError
from autotl.metrics import get_metric
from autotl.plugins import Registry
from autotl.testing import NEGATIVE, NEUTRAL, POSITIVE

from conftest import search_fails_with, write_csv  # noqa: E402

# Each label is set by a word of its own list in the text: learnable from the words alone.
WORDS = {"complaint": NEGATIVE, "praise": POSITIVE, "story": ["plot", "story"]}
NAMES = tuple(sorted(WORDS))
FILLER = [w for w in NEUTRAL if w not in WORDS["story"]]
REGISTERED = Registry().strategies()  # built-ins and installed plugins (autotl-peft)


def label_set_rows(n: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """(text, labels): one or (two times in three) two labels, each label's word in the text."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        labels = sorted(rng.sample(NAMES, rng.choice((1, 2, 2))))
        words = rng.sample(FILLER, 3) + [rng.choice(WORDS[name]) for name in labels]
        rng.shuffle(words)
        rows.append((" ".join(words), labels))
    return rows


def sets_csv(path, n: int = 60, seed: int = 0, sep: str = "|", header=("text", "labels")) -> str:
    return write_csv(path, [(text, sep.join(labels)) for text, labels in label_set_rows(n, seed)], header)


def columns_csv(path, n: int = 60, seed: int = 0) -> str:
    rows = [(text, *(int(name in labels) for name in NAMES)) for text, labels in label_set_rows(n, seed)]
    return write_csv(path, rows, ("text", *NAMES))


def expected_targets(n: int, seed: int = 0) -> np.ndarray:
    return np.array([[int(name in labels) for name in NAMES] for _, labels in label_set_rows(n, seed)])


def as_rows(split) -> set[tuple[str, tuple[int, ...]]]:
    return {(t, tuple(int(v) for v in row)) for t, row in zip(split.texts, split.targets)}


# -- reading label sets ------------------------------------------------------------------------------

def test_label_sets_are_inferred_from_the_separator_and_said_so(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="autotl"):
        data = load_data(sets_csv(tmp_path / "d.csv"))
    assert data.task is Task.MULTILABEL and data.label_names == NAMES and data.label_sep == "|"
    assert data.num_outputs == 3 and data.schema()["label_sep"] == "|"
    texts = [t for t, _ in label_set_rows(60)]
    every = dict(zip(texts, map(tuple, expected_targets(60))))
    assert as_rows(data.train) | as_rows(data.val) == set(every.items())  # each row's set, nothing lost
    assert "multi-label, 3 labels" in caplog.text and "inferred: more than half the rows hold it" in caplog.text


def test_label_set_cells_are_parsed_forgivingly():
    assert ml.parse_sets(["b|a", " a | b |", "c||c", "a"], "|") == [("a", "b"), ("a", "b"), ("c",), ("a",)]


def test_a_minority_of_separators_stays_single_label(tmp_path):
    rows = [(f"text {i}", "a|b" if i < 10 else ("a" if i % 2 else "b")) for i in range(30)]  # 10 of 30 hold '|'
    data = load_data(write_csv(tmp_path / "d.csv", rows))
    assert data.task is Task.CLASSIFICATION and set(data.label_names) == {"a", "b", "a|b"}
    assert "label_sep" not in data.schema()


def test_label_sep_reads_another_separator(tmp_path):
    data = load_data(sets_csv(tmp_path / "d.csv", sep=";"), label_sep=";")
    assert data.task is Task.MULTILABEL and data.label_names == NAMES and data.label_sep == ";"
    assert np.array_equal(np.sort(np.concatenate([data.train.targets, data.val.targets]).sum(axis=0)),
                          np.sort(expected_targets(60).sum(axis=0)))


def test_several_binary_columns_are_one_label_each(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="autotl"):
        data = load_data(columns_csv(tmp_path / "d.csv"), label_col="story, praise,complaint")
    assert data.task is Task.MULTILABEL
    assert data.label_names == ("story", "praise", "complaint")  # the order given: target column j
    assert data.label_col == "story,praise,complaint" and data.text_col == "text"
    order = [NAMES.index(n) for n in data.label_names]
    every = {t: tuple(row[order]) for (t, _), row in zip(label_set_rows(60), expected_targets(60))}
    assert as_rows(data.train) | as_rows(data.val) == set(every.items())
    assert "one 0/1 column per label" in caplog.text


def test_a_dataframes_bool_columns_are_label_columns():
    rows = label_set_rows(30) + [("the movie a film", [])]  # the last: no label at all, a row of zeros
    frame = pd.DataFrame({"text": [t for t, _ in rows], **{n: [n in labels for _, labels in rows] for n in NAMES}})
    data = load_data(frame, label_col=",".join(NAMES))
    assert data.task is Task.MULTILABEL
    expected = set(zip([t for t, _ in rows], map(tuple, expected_targets(30)))) | {("the movie a film", (0, 0, 0))}
    assert as_rows(data.train) | as_rows(data.val) == expected


def test_the_split_keeps_every_label_on_both_sides_and_its_share(tmp_path):
    rare = [("lonely plot a", "story|praise"), ("lonely plot b", "story")] + \
        [(f"row {i} good", "praise|complaint") for i in range(40)]
    data = load_data(write_csv(tmp_path / "d.csv", rare), seed=3)
    for split in (data.train, data.val):
        assert split.targets.sum(axis=0).min() >= 1  # 'story' is on 2 rows only: one each side
    again = load_data(write_csv(tmp_path / "d.csv", rare), seed=3)
    assert as_rows(again.val) == as_rows(data.val)


def test_strata_group_rows_by_their_rarest_label():
    targets = np.array([[1, 1, 0], [1, 0, 0], [1, 0, 1], [0, 0, 0], [1, 1, 0]])  # counts 4, 2, 1
    groups = sorted(tuple(g) for g in ml.strata(targets))
    assert groups == [(0, 4), (1,), (2,), (3,)]


def test_val_and_test_files_are_read_the_same_way(tmp_path):
    data = load_data(columns_csv(tmp_path / "d.csv"), label_col="complaint,praise,story",
                     val=columns_csv(tmp_path / "v.csv", 10, seed=1), test=columns_csv(tmp_path / "t.csv", 8, seed=2))
    assert np.array_equal(data.val.targets, expected_targets(10, seed=1))
    assert np.array_equal(data.test.targets, expected_targets(8, seed=2))


# -- bad input: one error line ---------------------------------------------------------------------

def test_a_binary_column_holding_a_2_is_refused(tmp_path):
    path = columns_csv(tmp_path / "d.csv")
    frame = pd.read_csv(path)
    frame.loc[4, "praise"] = 2
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"label column 'praise' .* holds '2' \(row 5.*only 0 or 1"):
        load_data(path, label_col="complaint,praise,story")


def test_label_sep_on_a_single_label_column_is_refused(tmp_path):
    path = write_csv(tmp_path / "d.csv", [(f"text {i}", "a" if i % 2 else "b") for i in range(20)])
    with pytest.raises(DataError, match="label_sep '|' was given, but no row .* holds it: the column holds single"):
        load_data(path, label_sep="|")


def _with_value(path, row: int, column: str, value) -> str:
    frame = pd.read_csv(path)
    frame.loc[row, column] = value
    frame.to_csv(path, index=False)
    return path


def _appended(path, *rows) -> str:
    with open(path, "a", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


BAD = {  # case -> (data and extra flags for `autotl search`, what the error line says)
    "a 2 in a 0/1 column": (lambda d: [_with_value(columns_csv(d / "d.csv"), 0, "praise", 2),
                                       "--label-col", "complaint,praise,story"], "holds '2'"),
    "--label-sep on single labels": (lambda d: [write_csv(d / "d.csv", [(f"text {i}", "ab"[i % 2]) for i in range(20)]),
                                                "--label-sep", "|"], "holds single labels"),
    "--label-sep with 0/1 columns": (lambda d: [columns_csv(d / "d.csv"), "--label-col", "complaint,praise,story",
                                                "--label-sep", "|"], "leave out --label-sep"),
    "a misspelled label column": (lambda d: [columns_csv(d / "d.csv"), "--label-col", "complaint,praize"],
                                  "column 'praize' not found .*did you mean 'praise'"),
    "a label on one row": (lambda d: [_appended(sets_csv(d / "d.csv"), ["an odd one", "praise|zebra"])],
                           "label 'zebra' is set on 1 row"),
    "a single-label metric": (lambda d: [sets_csv(d / "d.csv"), "--metric", "accuracy"],
                              "choose from: f1_macro, f1_micro, subset_accuracy"),
    "an unknown label in --val": (lambda d: [sets_csv(d / "d.csv"), "--val",
                                             _appended(sets_csv(d / "v.csv", 10, 1), ["a new one", "praise|unicorn"])],
                                  "labels not seen in the training data: 'unicorn'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_multilabel_input_is_one_error_line(capsys, no_training, tmp_path, tiny_model_dir, case):
    search_fails_with(capsys, tmp_path, tiny_model_dir, BAD[case])


# -- metrics and the threshold ---------------------------------------------------------------------

TARGETS = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
PREDICTED = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 0, 1]])
# by hand: tp 4 (row0 a, row1 b, row2 a, row3 c), fp 1 (row2 c), fn 2 (row0 c, row2 b)
# per label: a tp2 fp0 fn0 -> 1; b tp1 fp0 fn1 -> 2/3; c tp1 fp1 fn1 -> 1/2; rows right: 1 and 3


def test_metrics_match_hand_computed_values():
    assert get_metric(None, "multilabel").name == "f1_micro"
    assert get_metric("f1_micro", "multilabel")(TARGETS, PREDICTED) == pytest.approx(8 / 11)
    assert get_metric("f1_macro", "multilabel")(TARGETS, PREDICTED) == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    assert get_metric("subset_accuracy", "multilabel")(TARGETS, PREDICTED) == pytest.approx(0.5)
    # the single-label macro-F1 is unchanged: classes 0, 1, 2 with F1 1, 2/3, 0
    assert get_metric("f1_macro", "classification")([0, 1, 1, 2], [0, 1, 2, 1]) == pytest.approx((1 + 0.5 + 0) / 3)
    with pytest.raises(UsageError, match="subset_accuracy"):
        get_metric("accuracy", "multilabel")
    with pytest.raises(UsageError, match="is for multilabel"):
        get_metric("f1_micro", "classification")


def test_the_threshold_tuned_on_validation_is_the_best_grid_point():
    targets = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
    # positives at 0.42 and 0.47, negatives at most 0.38: only 0.40 on the grid separates them
    probabilities = np.array([[0.42, 0.10], [0.47, 0.38], [0.20, 0.44], [0.05, 0.30]])
    metric = get_metric("f1_micro", "multilabel")
    chosen = ml.tune_threshold(targets, probabilities, metric)
    assert chosen == pytest.approx(0.40)
    assert metric(targets, ml.decide(probabilities, chosen)) == 1.0
    for other in (0.35, 0.45):
        assert metric(targets, ml.decide(probabilities, other)) < 1.0
    # every threshold from 0.25 to 0.75 is perfect here: the tie goes to the one nearest 0.5
    clear = np.array([[0.9, 0.1], [0.8, 0.2]])
    assert ml.tune_threshold(np.array([[1, 0], [1, 0]]), clear, metric) == pytest.approx(0.5)


def test_subset_accuracy_standard_error_is_binomial_over_rows():
    from autotl.select import paired_difference, standard_error

    metric = get_metric("subset_accuracy", "multilabel")
    targets = np.tile(TARGETS, (25, 1))  # 100 rows, half of them right as a whole
    first = np.tile(PREDICTED, (25, 1))
    assert standard_error(metric, targets, first) == pytest.approx(np.sqrt(0.5 * 0.5 / 100))
    second = first.copy()
    second[:4] = targets[:4]  # 2 more rows right
    d = paired_difference(metric, targets, second, first)
    per_row = np.r_[np.ones(2), np.zeros(98)]
    assert d.score == pytest.approx(0.02) and d.se == pytest.approx(per_row.std(ddof=1) / 10)
    assert 0 < standard_error(get_metric("f1_micro", "multilabel"), targets, first) < 0.1  # bootstrap


def test_ensemble_averages_each_labels_probability():
    from autotl.ensemble import combine

    outputs = torch.tensor([[[2.0, -1.0]], [[0.0, -3.0]]])  # two members, one row, two labels
    mean = (torch.sigmoid(outputs[0]) + torch.sigmoid(outputs[1])) / 2
    assert torch.allclose(torch.sigmoid(combine(outputs, False, multilabel=True)), mean, atol=1e-6)


# -- the head, the loss, training ------------------------------------------------------------------

@pytest.fixture(scope="module")
def encoded(tiny_model_dir):
    from autotl.backbone import load_tokenizer
    from autotl.batching import encode

    tokenizer = load_tokenizer(tiny_model_dir)

    def enc(n, seed, name):
        rows = label_set_rows(n, seed)
        targets = ml.encode([tuple(labels) for _, labels in rows], NAMES, name)
        return encode(tokenizer, [t for t, _ in rows], targets, 32, key=f"multilabel:{name}:{n}")

    return enc(120, 0, "train"), enc(40, 1, "val"), tokenizer.pad_token_id


def settings(pad_id, **kw):
    from autotl.train import FitSettings

    return FitSettings(metric=get_metric(None, "multilabel"), regression=False, pad_id=pad_id, multilabel=True, **kw)


@pytest.mark.parametrize("pooling", ["mean", "standard"])
def test_the_head_has_one_output_per_label_and_bce_loss(tiny_model_dir, encoded, pooling):
    from autotl.batching import collate
    from autotl.model import build_model
    from autotl.train import _loss

    train, _, pad_id = encoded
    model = build_model(tiny_model_dir, pooling, num_outputs=3, label_names=NAMES, regression=False, multi_label=True)
    assert model.config.problem_type == "multi_label_classification"
    ids, mask = collate(train, np.arange(5), pad_id)
    logits = model(ids, mask)
    assert logits.shape == (5, 3)
    targets = torch.as_tensor(train.targets[:5])
    by_hand = -(targets * torch.log(torch.sigmoid(logits)) + (1 - targets) * torch.log(1 - torch.sigmoid(logits)))
    assert _loss(logits, targets, settings(pad_id)).item() == pytest.approx(by_hand.mean().item(), rel=1e-5)


def test_a_fine_tune_learns_label_sets_and_keeps_its_threshold(tiny_model_dir, encoded):
    from autotl.model import build_model
    from autotl.strategy import Training, one_stage
    from autotl.train import fit

    train, val, pad_id = encoded
    torch.manual_seed(0)
    model = build_model(tiny_model_dir, "mean", num_outputs=3, label_names=NAMES, regression=False, multi_label=True)
    plan = one_stage(model.parameters(), Training(lr=3e-3, epochs=10, batch_size=16, weight_decay=0.0),
                     warmup_ratio=0.0, summary="full fine-tune")
    result = fit(model, plan, train, val, settings(pad_id))
    every_label = ml.f1_micro(val.targets, np.ones_like(val.targets))  # what predicting every label scores
    assert result.best_score >= 0.95 > every_label + 0.2
    assert result.threshold in ml.THRESHOLDS and result.val_predictions.shape == val.targets.shape
    assert ml.f1_micro(val.targets, result.val_predictions) == pytest.approx(result.best_score)


def test_a_greedy_soup_of_multilabel_models_keeps_its_own_threshold(tiny_model_dir, encoded, tmp_path):
    """Two copies of a learned model, its output layer pushed opposite ways by the same noise:
    each alone is worse, their average is the learned model, with that model's threshold."""
    from autotl import candidates
    from autotl.model import build_model
    from autotl.objective import TrialSetup
    from autotl.soup import greedy_soup
    from autotl.strategy import Training, one_stage
    from autotl.train import fit, validate

    train, val, pad_id = encoded
    setup = TrialSetup(backbone_path=tiny_model_dir, strategies={}, poolings=("mean",), train=train, val=val,
                       label_names=NAMES, num_outputs=3, fit=settings(pad_id))

    def model():
        return build_model(tiny_model_dir, "mean", num_outputs=3, label_names=NAMES, regression=False,
                           multi_label=True)

    torch.manual_seed(0)
    good = model()
    fit(good, one_stage(good.parameters(), Training(lr=3e-3, epochs=10, batch_size=16, weight_decay=0.0),
                        warmup_ratio=0.0, summary="fine-tune"), train, val, setup.fit)
    noise = torch.randn_like(good.output_layer().weight) * 3
    for trial, sign in ((0, 1), (1, -1)):
        copy = model()
        copy.load_state_dict(good.state_dict())
        with torch.no_grad():
            copy.output_layer().weight.add_(sign * noise)
        assert validate(copy, val, setup.fit).score < validate(good, val, setup.fit).score, "the case must hold"
        assert candidates.keep_model(tmp_path, trial, copy, score=0.5, head="mean", params={}, maximize=True)
    soup = greedy_soup(setup, tmp_path, 0)
    expected = validate(good, val, setup.fit)
    assert soup is not None and soup.members == (0, 1)
    assert soup.score == pytest.approx(expected.score) and soup.threshold == expected.threshold


@pytest.mark.parametrize("name", sorted(REGISTERED))
def test_every_registered_strategy_trains_on_label_sets(tiny_model_dir, encoded, name):
    """The conformance suite's forward/backward check, with a 2-D target."""
    from autotl.model import build_model
    from autotl.train import fit

    from types import SimpleNamespace

    from autotl.data import Task
    from autotl.strategy import unsupported

    train, val, pad_id = encoded
    strategy = REGISTERED[name].strategy
    # Label sets with unlabeled rows: a strategy that cannot learn from label sets says why
    # (self-training pseudo-labels single classes) and is left out of such searches
    reason = unsupported(strategy, SimpleNamespace(task=Task.MULTILABEL, unlabeled=("an unlabeled row",),
                                                   unlabeled_found=1))
    if reason is not None:
        assert name in ("self_training", "probe_self_training") and "single-label" in reason, (name, reason)
        return
    for pooling in [getattr(strategy, "head", None)] if getattr(strategy, "head", None) else ["mean", "standard"]:
        model = build_model(tiny_model_dir, pooling, num_outputs=3, label_names=NAMES, regression=False,
                            multi_label=True)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        params = {k: (1 if k == f"{name}.epochs" else v) for k, v in strategy.defaults.items()}
        result = fit(model, strategy.prepare(model, params), train, val, settings(pad_id))
        assert 0.0 <= result.best_score <= 1.0 and result.threshold in ml.THRESHOLDS, (name, pooling)
        assert result.val_predictions.shape == val.targets.shape
        assert any(not p.detach().equal(before[n]) for n, p in model.named_parameters()), (name, pooling)


# -- end to end ------------------------------------------------------------------------------------

def check_label_set_predictions(frame: pd.DataFrame, info: dict, sep: str = "|") -> None:
    """prediction is the labels whose probability reaches the stored threshold, joined by `sep`."""
    names = info["data"]["label_names"]
    assert list(frame.columns)[1:] == ["prediction", *[f"prob_{n}" for n in names]]
    probs = frame[[f"prob_{n}" for n in names]].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all()
    threshold = info["threshold"]
    expected = [sep.join(n for n, p in zip(names, row) if p >= threshold) for row in probs]
    assert frame["prediction"].fillna("").tolist() == expected


def test_a_search_over_every_builtin_strategy_predicts_label_sets(capsys, tmp_path, tiny_model_dir):
    from autotl.cli import main
    from conftest import BUILTINS

    data, test = sets_csv(tmp_path / "d.csv", 60), sets_csv(tmp_path / "t.csv", 20, seed=5)
    run = tmp_path / "run"
    code = main(["search", data, "--model", tiny_model_dir, "--out", str(run), "--no-progress", "--test", test,
                 "--strategies", ",".join(sorted(BUILTINS)), "--n-trials", str(len(BUILTINS)), "--ensemble", "2",
                 "--rescore", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    board = json.loads((run / "leaderboard.json").read_text())
    assert {r["strategy"] for r in board if r["state"] == "complete"} == set(BUILTINS), board  # none failed
    assert all(isinstance(r["se"], float) for r in board if r["state"] == "complete")
    info = json.loads((run / "best" / "autotl.json").read_text())
    assert info["metric"] == "f1_micro" and info["threshold"] in ml.THRESHOLDS
    assert info["data"]["task"] == "multilabel" and info["data"]["label_sep"] == "|"
    assert set(info["scores"]["test"]["metrics"]) == {"f1_micro", "f1_macro", "subset_accuracy"}
    config = json.loads((run / "best" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification" and list(config["id2label"].values()) == list(NAMES)
    ensemble = json.loads((run / "ensemble" / "ensemble.json").read_text())
    assert ensemble["threshold"] in ml.THRESHOLDS and ensemble["scores"]["test"]["rows"] == 20
    preds = tmp_path / "preds.csv"
    assert main(["predict", str(run / "best"), test, "-o", str(preds), "--device", "cpu"]) == 0
    check_label_set_predictions(pd.read_csv(preds, keep_default_na=False), info)
    served = autotl.predict(run, test, device="cpu")  # the run directory serves its ensemble
    check_label_set_predictions(served, {**info, "threshold": ensemble["threshold"]})


def test_binary_columns_end_to_end_write_sets_joined_by_a_bar(tmp_path, tiny_model_dir):
    frame = pd.read_csv(columns_csv(tmp_path / "d.csv", 60))
    result = autotl.search(frame, model=tiny_model_dir, out=tmp_path / "run", n_trials=1, progress=False,
                           strategies=["linear_probe"], label_col="complaint,praise,story", metric="subset_accuracy",
                           rescore=0, soup=False)
    assert result.metric == "subset_accuracy"
    info = json.loads((result.best_model / "autotl.json").read_text())
    assert info["data"]["label_col"] == "complaint,praise,story" and info["data"]["label_sep"] == "|"
    check_label_set_predictions(autotl.predict(tmp_path / "run", frame[["text"]], device="cpu"), info)


def test_standard_head_model_loads_in_a_pipeline_that_agrees(tmp_path, tiny_model_dir, encoded):
    from transformers import pipeline

    from autotl.backbone import load_tokenizer
    from autotl.export import save_best
    from autotl.model import build_model

    model = build_model(tiny_model_dir, "standard", num_outputs=3, label_names=NAMES, regression=False,
                        multi_label=True)
    data = {"text_col": "text", "label_col": "labels", "task": "multilabel", "label_names": list(NAMES),
            "label_sep": "|"}
    save_best(model, load_tokenizer(tiny_model_dir), tmp_path, {"data": data, "threshold": 0.5, "trial": 0},
              max_length=32)
    texts = [t for t, _ in label_set_rows(6, seed=9)]
    ours = autotl.predict(tmp_path, pd.DataFrame({"text": texts}), device="cpu")
    theirs = pipeline("text-classification", model=str(tmp_path / "best"), device="cpu", top_k=None)(texts)
    for row, scores in zip(ours.itertuples(index=False), theirs):
        by_label = {s["label"]: s["score"] for s in scores}
        assert [by_label[n] for n in NAMES] == pytest.approx([getattr(row, f"prob_{n}") for n in NAMES], abs=1e-5)
