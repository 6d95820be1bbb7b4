"""Unlabeled rows: read (empty labels, --unlabeled), counted, capped, fed to `tapt`,
`self_training` and `probe_self_training`; the adapted backbone computed once per setting;
the self-trained probe's features computed once per search; bad input one line."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from autotl import data as data_module
from autotl import pseudolabel, tapt
from autotl.api import prepare
from autotl.batching import Encoded, concat
from autotl.config import RunConfig
from autotl.data import load_data
from autotl.errors import UsageError
from autotl.objective import run_params
from autotl.plugins import Registry
from autotl.strategy import Context, offered
from autotl.testing import sentiment_rows

from conftest import fails, write_csv  # noqa: E402

BOTH = ("tapt", "self_training")
ALL = (*BOTH, "probe_self_training")  # every strategy that learns from unlabeled rows


def blank_labels(n: int, seed: int = 3) -> list[tuple[str, str]]:
    return [(text, "") for text, _ in sentiment_rows(n, seed)]


def setup_with_unlabeled(tmp_path, model_dir, *, empty: int = 2, extra: int = 8, strategies=BOTH):
    """A prepared search on 30 labelled rows, `empty` rows with an empty label, and an
    --unlabeled file of `extra` rows."""
    data = write_csv(tmp_path / "data.csv", sentiment_rows(30) + blank_labels(empty))
    extra_csv = write_csv(tmp_path / "u.csv", [(t,) for t, _ in sentiment_rows(extra, seed=4)], header=("text",))
    config = RunConfig.build(data, model=model_dir, out=str(tmp_path / "run"), strategies=strategies,
                             unlabeled=extra_csv, progress=False)
    return prepare(config, device="cpu", budget=None, progress=False)


def params(strategy: str, **own) -> dict:
    defaults = Registry().strategies()[strategy].strategy.defaults
    quick = {**defaults, f"{strategy}.epochs": 1, **{f"{strategy}.{k}": v for k, v in own.items()}}
    return {"strategy": strategy, "head.pooling": "mean", **quick}


@pytest.fixture
def mlm_runs(monkeypatch):
    """Every masked-LM training run: (corpus, setting)."""
    runs, real = [], tapt.train_mlm

    def spy(backbone_path, corpus, setting, out, **kw):
        runs.append((corpus, setting))
        return real(backbone_path, corpus, setting, out, **kw)

    monkeypatch.setattr(tapt, "train_mlm", spy)
    return runs


# -- reading -------------------------------------------------------------------------------------

def test_rows_with_an_empty_label_become_unlabeled_rows(tmp_path, caplog):
    rows = sentiment_rows(20) + blank_labels(5) + [("", "positive")]
    with caplog.at_level(logging.INFO, logger="autotl"):
        data = load_data(write_csv(tmp_path / "data.csv", rows))
    assert data.unlabeled == tuple(t for t, _ in blank_labels(5)) and data.unlabeled_found == 5
    assert len(data.train.texts) + len(data.val.texts) == 20 and data.dropped_rows == 1
    assert f"{tmp_path / 'data.csv'}: dropped 1 of 26 rows with missing text" in caplog.text
    assert "; 5 unlabeled rows found, 5 kept" in caplog.text
    # the unlabeled texts are part of what workers must agree on; labelled-only data keeps its fingerprint
    alone = load_data(write_csv(tmp_path / "labelled.csv", sentiment_rows(20)))
    assert alone.fingerprint != data.fingerprint and alone.unlabeled == ()
    assert alone.fingerprint == load_data(write_csv(tmp_path / "again.csv", sentiment_rows(20))).fingerprint


def test_an_unlabeled_file_adds_its_texts_and_a_cap_keeps_a_sample(tmp_path, monkeypatch, caplog):
    data = write_csv(tmp_path / "data.csv", sentiment_rows(20) + blank_labels(2))
    # its label column, when there is one, is ignored: every text is an unlabeled row
    extra = [(f"extra {i}", "positive" if i % 2 else "") for i in range(8)]
    unlabeled = write_csv(tmp_path / "u.csv", extra)
    everything = load_data(data, unlabeled=unlabeled)
    assert everything.unlabeled == tuple(t for t, _ in blank_labels(2)) + tuple(t for t, _ in extra)
    monkeypatch.setattr(data_module, "MAX_UNLABELED", 6)
    with caplog.at_level(logging.INFO, logger="autotl"):
        capped = load_data(data, unlabeled=unlabeled)
    assert (capped.unlabeled_found, len(capped.unlabeled)) == (10, 6)
    assert set(capped.unlabeled) < set(everything.unlabeled)
    assert "; 10 unlabeled rows found, 6 kept" in caplog.text
    assert "10 unlabeled rows: a random 6 of them are used (at most 6" in caplog.text


# -- offered or not --------------------------------------------------------------------------------

def test_the_strategies_are_not_offered_without_unlabeled_rows(tmp_path, caplog):
    strategies = Registry().strategies()
    labelled = load_data(write_csv(tmp_path / "a.csv", sentiment_rows(20)))
    with caplog.at_level(logging.INFO, logger="autotl"):
        kept = offered(strategies, labelled, named=False)
    assert not set(ALL) & set(kept) and "full_finetune" in kept
    assert "strategy tapt is not searched: it learns from unlabeled rows" in caplog.text
    with pytest.raises(UsageError, match="strategy 'tapt' cannot run on this data: .*--unlabeled U.csv"):
        offered({"tapt": strategies["tapt"]}, labelled, named=True)
    # self-training pseudo-labels classes; TAPT needs no labels at all
    values = [(text, f"{i / 4:.2f}") for i, (text, _) in enumerate(sentiment_rows(20))]
    regression = load_data(write_csv(tmp_path / "r.csv", values + blank_labels(3)))
    kept = offered(strategies, regression, named=False)
    assert "tapt" in kept and not {"self_training", "probe_self_training"} & set(kept)
    for name in ("self_training", "probe_self_training"):
        with pytest.raises(UsageError, match="single-label classes and this is regression data"):
            offered({name: strategies[name]}, regression, named=True)


def test_the_self_trained_probe_runs_only_when_named(tmp_path, caplog):
    strategies = Registry().strategies()
    data = load_data(write_csv(tmp_path / "a.csv", sentiment_rows(20) + blank_labels(4)))
    with caplog.at_level(logging.INFO, logger="autotl"):
        everything = offered(strategies, data, named=False)
    assert {"tapt", "self_training"} <= set(everything) and "probe_self_training" not in everything
    assert "strategy probe_self_training is searched only when named with --strategies: on 100-label" in caplog.text
    named = offered({k: strategies[k] for k in ("linear_probe", "probe_self_training")}, data, named=True)
    assert list(named) == ["linear_probe", "probe_self_training"]


def test_all_three_are_registered_as_builtin_plugins():
    strategies = Registry().strategies()
    for name in ALL:
        assert (strategies[name].plugin, strategies[name].distribution) == ("autotl.semisupervised", "autotl 0.1.0")


# -- reaching the strategies ---------------------------------------------------------------------------

def test_unlabeled_rows_reach_both_strategies_and_validation_rows_never_do(tmp_path, tiny_model_dir, mlm_runs,
                                                                          monkeypatch):
    prepared = setup_with_unlabeled(tmp_path, tiny_model_dir)
    setup = prepared.setup
    assert list(setup.strategies) == list(BOTH)
    assert len(setup.unlabeled) == 10 and prepared.profile["unlabeled"] == {"found": 10, "kept": 10,
                                                                                "readers": list(BOTH)}
    run_params(setup, params("tapt", mlm_steps=100))
    (corpus, setting), = mlm_runs
    assert corpus == setup.train.ids + setup.unlabeled.ids and setting.steps == 100
    seen, real = [], pseudolabel.pseudo_labelled

    def spy(model, context, **kw):
        rows = real(model, context, **kw)
        seen.append((len(context.unlabeled), len(rows.data)))
        return rows

    monkeypatch.setattr(pseudolabel, "pseudo_labelled", spy)
    outcome = run_params(setup, params("self_training", rounds=2, student_epochs=1, threshold=0.6))
    assert [n for n, _ in seen] == [10, 10]  # one pseudo-labelling per round, over every unlabeled row
    assert all(len(setup.train) <= rows <= len(setup.train) + 10 for _, rows in seen)
    assert len(outcome.result.scores) == 1 + 2  # the teacher's epoch, then one per round


def test_the_adapted_backbone_is_computed_once_per_setting(tmp_path, tiny_model_dir, mlm_runs):
    setup = setup_with_unlabeled(tmp_path, tiny_model_dir).setup
    run_params(setup, params("tapt", mlm_steps=100, lr=5e-5))
    run_params(setup, {**params("tapt", mlm_steps=100, lr=1e-4), "head.pooling": "standard"})  # another trial
    # the refit (train + validation rows, nothing validated) reuses the search's: its cost is the trial's
    refit = replace(setup, train=concat(setup.train, setup.val), val=None, fit=replace(setup.fit, max_epochs=1))
    run_params(refit, params("tapt", mlm_steps=100))
    assert len(mlm_runs) == 1
    run_params(setup, params("tapt", mlm_steps=300))  # another setting: another adapted backbone
    assert [s.steps for _, s in mlm_runs] == [100, 300]
    kept = sorted(p for p in (tmp_path / "run" / "tapt").iterdir() if p.is_dir())
    assert len(kept) == 2 and all((p / "config.json").is_file() for p in kept)
    assert sorted(json.loads((p / "tapt.json").read_text())["setting"]["steps"] for p in kept) == [100, 300]


def test_masked_lm_training_stops_at_the_deadline_and_keeps_nothing(tmp_path, tiny_model_dir):
    from autotl.budget import Budget
    from autotl.errors import StrategyError

    clock = iter([0.0] + [100.0] * 50)  # the budget starts, then its 10 s are long gone
    spent = Budget(10, clock=lambda: next(clock))
    corpus = tuple(tuple(row) for row in setup_texts_ids(tiny_model_dir))
    with pytest.raises(StrategyError, match="time ran out after 0 of 300 masked-LM steps"):
        tapt.adapted_backbone(tiny_model_dir, corpus, tapt.MLMSetting(300), work_dir=str(tmp_path), device="cpu",
                              seed=0, deadline=spent)
    assert not [p for p in (tmp_path / "tapt").iterdir() if p.is_dir()]  # no adapted backbone, no temp dir


def test_two_processes_asking_at_once_compute_it_once(tmp_path, monkeypatch):
    calls = []

    def slow_fake(backbone_path, corpus, setting, out, **kw):
        calls.append(out)
        time.sleep(0.3)  # the other asker arrives meanwhile and must wait for this one
        out.mkdir()
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(tapt, "train_mlm", slow_fake)
    found = []

    def ask():
        found.append(tapt.adapted_backbone("bert", ((2, 5, 3),), tapt.MLMSetting(100), work_dir=str(tmp_path),
                                           device="cpu", seed=0))

    askers = [threading.Thread(target=ask) for _ in range(2)]
    for t in askers:
        t.start()
    for t in askers:
        t.join()
    assert len(calls) == 1 and found[0] == found[1] and (found[0] / "config.json").is_file()
    assert [p.name for p in (tmp_path / "tapt").iterdir() if p.is_dir()] == [found[0].name]  # no temp dir left


def test_the_adapted_encoder_replaces_the_pretrained_one_but_not_the_pooler(tiny_model_dir, tiny_model, tmp_path):
    corpus = tuple(tuple(row) for row in setup_texts_ids(tiny_model_dir))
    path = tapt.adapted_backbone(tiny_model_dir, corpus, tapt.MLMSetting(20), work_dir=str(tmp_path), device="cpu",
                                 seed=0)
    model = tiny_model("standard")
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    tapt.load_adapted(model, path)
    from autotl.backbone import load_masked_lm

    adapted = load_masked_lm(str(path)).base_model.state_dict()
    after = model.encoder.state_dict()
    assert all(torch.equal(after[k], v) for k, v in adapted.items())
    assert not torch.equal(after["encoder.layer.0.attention.self.query.weight"],
                           before["encoder.layer.0.attention.self.query.weight"])  # the MLM steps trained it
    assert all(torch.equal(after[k], before[k]) for k in before if k.startswith("pooler."))


def setup_texts_ids(model_dir) -> list:
    from autotl.backbone import load_tokenizer

    return load_tokenizer(model_dir)([t for t, _ in sentiment_rows(16)])["input_ids"]


# -- pseudo-labels -------------------------------------------------------------------------------

class Teacher(torch.nn.Module):
    """A constructed teacher: its logits for a row are looked up by the row's second token."""

    def __init__(self, probabilities: dict[int, list[float]]):
        super().__init__()
        self.table = torch.zeros(max(probabilities) + 1, 2)
        for token, p in probabilities.items():
            self.table[token] = torch.log(torch.tensor(p))

    def forward(self, ids, mask, *rest):
        return self.table[ids[:, 1]]


def test_only_rows_above_the_threshold_get_pseudo_labels():
    teacher = Teacher({5: [0.95, 0.05], 6: [0.6, 0.4], 7: [0.08, 0.92], 8: [0.5, 0.5], 9: [0.91, 0.09]})
    unlabeled = Encoded(tuple((2, k, 3) for k in (5, 6, 7, 8, 9)), np.full(5, -1), "u")
    train = Encoded(((2, 10, 3), (2, 11, 3)), np.array([1, 0]), "t")
    rows = pseudolabel.pseudo_labelled(teacher, Context(train, unlabeled), threshold=0.9, weight=0.3)
    assert rows.data.ids == train.ids + ((2, 5, 3), (2, 7, 3), (2, 9, 3))
    assert rows.data.targets.tolist() == [1, 0, 0, 1, 0]
    assert rows.weights.tolist() == pytest.approx([1, 1, 0.3, 0.3, 0.3])
    strict = pseudolabel.pseudo_labelled(teacher, Context(train, unlabeled), threshold=0.95, weight=0.3)
    assert strict.data.ids == train.ids and strict.weights.tolist() == [1, 1]  # 0.95 itself is not above


def test_row_weights_scale_each_rows_loss():
    from autotl.train import FitSettings, _loss

    from autotl.metrics import get_metric

    logits, targets = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 3.0]]), torch.tensor([0, 0, 1])
    settings = FitSettings(metric=get_metric("accuracy", "classification"), regression=False, pad_id=0)
    assert _loss(logits, targets, settings, torch.ones(3)) == pytest.approx(_loss(logits, targets, settings).item())
    first_two = torch.nn.functional.cross_entropy(logits[:2], targets[:2], reduction="sum") / 3
    assert _loss(logits, targets, settings, torch.tensor([1.0, 1.0, 0.0])) == pytest.approx(first_two.item())
    weighted = FitSettings(**{**settings.__dict__, "class_weights": (1.0, 3.0)})
    assert _loss(logits, targets, weighted, torch.ones(3)) == pytest.approx(_loss(logits, targets, weighted).item())


# -- the self-trained probe ------------------------------------------------------------------------

def test_the_self_trained_probe_trains_the_head_only_on_pseudo_labelled_rows(tmp_path, tiny_model_dir, monkeypatch):
    from autotl.model import build_model

    setup = setup_with_unlabeled(tmp_path, tiny_model_dir, strategies=ALL).setup
    seen, real = [], pseudolabel.pseudo_labelled

    def spy(model, context, **kw):
        rows = real(model, context, **kw)
        seen.append((kw, len(rows.data), rows.weights.tolist()))
        return rows

    monkeypatch.setattr(pseudolabel, "pseudo_labelled", spy)
    outcome = run_params(setup, params("probe_self_training", rounds=2, threshold=0.0, pseudo_weight=0.25))
    assert [kw["frozen_encoder"] for kw, _, _ in seen] == [True, True]  # one pseudo-labelling per round
    # threshold 0: every unlabeled row is pseudo-labelled (a probability is above 0), at its weight
    assert all(rows == len(setup.train) + 10 for _, rows, _ in seen)
    assert seen[0][2] == [1.0] * len(setup.train) + [0.25] * 10
    assert len(outcome.result.scores) == 1 + 2  # the teacher's epoch, then one per round
    pretrained = build_model(tiny_model_dir, outcome.model.pooling, num_outputs=2, label_names=setup.label_names,
                             regression=False).encoder.state_dict()
    assert all(torch.equal(v, pretrained[k]) for k, v in outcome.model.encoder.state_dict().items())


def test_the_self_trained_probe_runs_the_encoder_once_per_search(tmp_path, tiny_model_dir):
    from autotl.features import CACHE

    setup = setup_with_unlabeled(tmp_path, tiny_model_dir, strategies=ALL).setup
    CACHE.clear()
    before = CACHE.computed
    run_params(setup, params("probe_self_training", threshold=0.0))
    assert CACHE.computed - before == 3  # the training, validation and unlabeled rows; the student's are put together
    run_params(setup, params("probe_self_training", threshold=0.0, lr=3e-2))  # another trial
    run_params(setup, params("probe_self_training", threshold=0.3, pseudo_weight=0.5))  # other pseudo-labels
    assert CACHE.computed - before == 3


@pytest.mark.parametrize("pooling", ["mean", "standard"])
def test_cached_pseudo_labels_are_the_full_forward_passs(tmp_path, tiny_model_dir, tiny_model, pooling):
    from autotl.features import CACHE
    from autotl.train import infer

    setup = setup_with_unlabeled(tmp_path, tiny_model_dir).setup
    model = tiny_model(pooling).eval()
    context = Context(setup.train, setup.unlabeled, pad_id=setup.fit.pad_id, device="cpu")
    CACHE.clear()
    probabilities = pseudolabel._softmax(infer(model, setup.unlabeled, pad_id=setup.fit.pad_id, device="cpu"))
    threshold = float(np.median(probabilities.max(axis=1)))  # about half the rows are above it
    cached = pseudolabel.pseudo_labelled(model, context, threshold=threshold, weight=0.5, frozen_encoder=True)
    plain = pseudolabel.pseudo_labelled(model, context, threshold=threshold, weight=0.5)
    assert cached.data.ids == plain.data.ids and cached.weights.tolist() == plain.weights.tolist()
    assert cached.data.targets.tolist() == plain.data.targets.tolist()
    assert len(setup.train) < len(cached.data) < len(setup.train) + len(setup.unlabeled)
    if model.splittable:  # the student's features, put together without running the encoder, are its own
        put = CACHE.features(model, cached.data, pad_id=setup.fit.pad_id, device="cpu", autocast=contextlib.nullcontext)
        computed = CACHE.computed
        from autotl.features import compute_features

        fresh = compute_features(model, cached.data, pad_id=setup.fit.pad_id, device="cpu",
                                 autocast=contextlib.nullcontext)
        assert CACHE.computed == computed and torch.allclose(put, fresh, atol=1e-5)


# -- end to end, and bad input -------------------------------------------------------------------------

def test_a_search_with_unlabeled_rows_runs_both_and_reports_them(capsys, tmp_path, tiny_model_dir):
    from autotl.cli import main

    data = write_csv(tmp_path / "data.csv", sentiment_rows(40) + blank_labels(4))
    extra = write_csv(tmp_path / "u.csv", [(t,) for t, _ in sentiment_rows(6, seed=4)], header=("text",))
    run = tmp_path / "run"
    code = main(["search", data, "--unlabeled", extra, "--model", tiny_model_dir, "--out", str(run), "--no-progress",
                 "--strategies", ",".join(BOTH), "--n-trials", "2", "--rescore", "0", "--no-soup"])
    out, err = capsys.readouterr()
    assert code == 0, err
    board = json.loads((run / "leaderboard.json").read_text())
    assert {r["strategy"] for r in board if r["state"] == "complete"} == set(BOTH), board
    ran = sorted(r["strategy"] for r in board if r["strategy"] in BOTH)
    note = f"10 found, 10 kept; read by 2 trial(s) ({', '.join(f'{n} {ran.count(n)}' for n in BOTH if n in ran)})"
    assert f"unlabeled rows (texts without a label): {note}" in (run / "report.md").read_text()
    assert f"unlabeled rows: {note}" in out  # the summary printed at the end
    assert any((p / "config.json").is_file() for p in (run / "tapt").iterdir())


def test_unlabeled_rows_no_searched_strategy_reads_are_said_to_be_unused(capsys, tmp_path, tiny_model_dir, caplog):
    from autotl.cli import main

    data = write_csv(tmp_path / "data.csv", sentiment_rows(40) + blank_labels(4))
    run = tmp_path / "run"
    code = main(["search", data, "--model", tiny_model_dir, "--out", str(run), "--no-progress",
                 "--strategies", "linear_probe", "--n-trials", "1", "--rescore", "0", "--no-soup", "--no-refit"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "unlabeled rows: 4 found, 4 kept; not used: no strategy searched reads them" in out
    assert "4 found, 4 kept; not used" in (run / "report.md").read_text()
    assert "no strategy searched reads them (tapt, self_training and probe_self_training do" in caplog.text


@pytest.mark.parametrize("case", ["missing file", "no text column", "tapt without unlabeled rows"])
def test_bad_unlabeled_input_is_one_line(capsys, no_training, tmp_path, tiny_model_dir, case):
    data = write_csv(tmp_path / "data.csv", sentiment_rows(20))
    argv = ["search", data, "--model", tiny_model_dir, "--out", tmp_path / "run", "--no-progress"]
    if case == "missing file":
        line = fails(capsys, [*argv, "--unlabeled", tmp_path / "nowhere.csv"])
        assert "nowhere.csv not found" in line
    elif case == "no text column":
        other = write_csv(tmp_path / "u.csv", [("a text",)], header=("sentence",))
        line = fails(capsys, [*argv, "--unlabeled", other])
        assert "column 'text' not found in" in line and "unlabeled rows need the training data's text column" in line
    else:
        line = fails(capsys, [*argv, "--strategies", "tapt"])
        assert line.startswith("error: strategy 'tapt' cannot run on this data") and "--unlabeled U.csv" in line
