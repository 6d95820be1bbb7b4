"""The knowledge base: meta-features, the nearest past searches, warm starts, records."""

from __future__ import annotations

import io
import json
import logging
import math
from contextlib import redirect_stderr, redirect_stdout

import pytest

import autotl
from autotl import knowledge
from autotl.knowledge import Neighbour, distance, nearest, warm_start
from autotl.plugins import Registry
from autotl.space import SpaceRecorder


def meta(rows=300, classes=2, regression=0.0, imbalance=1.0, probe=0.8):
    import math

    return {"rows": rows, "log10_rows": math.log10(rows), "regression": regression,
            "log2_classes": 0.0 if regression else math.log2(classes), "imbalance": imbalance,
            "log2_tokens_p50": 4.0, "log2_tokens_p95": 5.0, "probe": probe, "logme": 0.1}


def record(rid, name, m, trials, maximize=True):
    return {"id": rid, "data": {"name": name}, "meta": m, "maximize": maximize,
            "trials": [{"params": p, "state": "complete", "value": v} for p, v in trials]}


FT = {"strategy": "full_finetune", "head.pooling": "mean", "full_finetune.lr": 1e-4}
LP = {"strategy": "linear_probe", "head.pooling": "mean", "linear_probe.lr": 1e-3}
LLRD = {"strategy": "llrd", "head.pooling": "standard", "llrd.lr": 2e-4}


def test_distance_scales_each_meta_feature():
    assert distance(meta(), meta()) == 0.0
    assert distance(meta(rows=300), meta(rows=3000)) == pytest.approx(2.0)  # one decade: two units
    assert distance(meta(probe=0.8), meta(probe=0.9)) == pytest.approx(1.0)
    assert distance({"log10_rows": 2.0}, {"probe": 0.5}) == float("inf")  # nothing shared


def test_probe_scores_are_compared_only_between_the_same_backbones():
    def probes(**by_backbone):
        return {name: {"probe": p, "logme": 0.1} for name, p in by_backbone.items()}

    mpnet_only = {**meta(probe=0.9), "probes": probes(mpnet=0.9)}
    minilm_only = {**meta(probe=0.6), "probes": probes(minilm=0.6)}
    both = {**meta(probe=0.6), "probes": probes(minilm=0.6, mpnet=0.9)}
    assert distance(mpnet_only, minilm_only) == 0.0  # no backbone in common: the probe says nothing
    assert distance(mpnet_only, both) == 0.0  # mpnet's 0.9 against mpnet's 0.9, not MiniLM's 0.6
    assert distance(both, {**meta(probe=0.7), "probes": probes(minilm=0.7)}) == pytest.approx(1.0)
    assert distance(meta(probe=0.9), meta(probe=0.6)) == pytest.approx(3.0)  # older metas: the headline
    assert distance(mpnet_only, {**meta(probe=0.6), "probes": {"mpnet": "junk"}}) == 0.0  # malformed: not shared
    # a record from before per-backbone metas is read through its ranking
    old = {"id": "old", "data": {"name": "o"}, "meta": meta(probe=0.6),
           "trials": [{"params": FT, "state": "complete", "value": 0.9}],
           "transferability": [{"backbone": "minilm", "probe": 0.6, "logme": 0.1}]}
    assert nearest([old], mpnet_only)[0].similarity == pytest.approx(1.0)
    assert nearest([old], {**meta(probe=0.8), "probes": probes(minilm=0.8)}, min_similarity=0.0)[0].similarity \
        == pytest.approx(math.exp(-2.0))


def test_the_nearest_searches_are_of_the_same_task_type_and_most_similar():
    records = [record("far", "a", meta(rows=30000, classes=50), [(FT, 0.9)]),
               record("near", "b", meta(rows=350), [(FT, 0.9)]),
               record("mid", "c", meta(rows=1000, classes=4), [(FT, 0.9)]),
               record("regr", "d", meta(rows=300, regression=1.0), [(FT, 0.9)]),
               record("empty", "e", meta(rows=300), [])]
    found = nearest(records, meta(rows=300), k=2)
    assert [n.record["id"] for n in found] == ["near", "mid"]
    assert 0 < found[1].similarity < found[0].similarity <= 1
    assert [n.record["id"] for n in nearest(records, meta(rows=300), k=2, exclude_data="b")] == ["mid"]
    # "far" is too unlike to teach anything (below the similarity floor), unless the floor is 0
    assert [n.record["id"] for n in nearest(records, meta(rows=300), k=2, exclude_data="b",
                                            min_similarity=0.0)] == ["mid", "far"]


def test_a_warm_start_weighs_each_searchs_best_configurations_by_similarity():
    strategies = Registry().select(["full_finetune", "linear_probe", "llrd"])
    close = Neighbour(record("x", "x", meta(), [(FT, 0.90), (LP, 0.70), (LLRD, 0.80)]), 0.9)
    far = Neighbour(record("y", "y", meta(), [(FT, 0.50), (LP, 0.60), (LLRD, 0.40)]), 0.1)
    assert warm_start([close, far], strategies, ("standard", "mean"), limit=5) == [FT, LLRD, LP]
    # the far search's own best first when it is the close one
    assert warm_start([Neighbour(far.record, 0.9), Neighbour(close.record, 0.1)], strategies,
                      ("standard", "mean"), limit=1) == [LP]
    # only what this search can run: its strategies and heads
    assert warm_start([close], Registry().select(["linear_probe", "llrd"]), ("mean",), limit=5) == [LP]


def test_a_several_backbone_warm_start_keeps_a_past_backbone_choice_and_spreads_the_rest():
    from autotl.objective import BACKBONE

    strategies = Registry().select(["full_finetune", "linear_probe", "llrd"])
    compared = Neighbour(record("x", "x", meta(), [({**LLRD, BACKBONE: "big"}, 0.9), ({**FT, BACKBONE: "gone"}, 0.95),
                                                   ({**LP, BACKBONE: "small"}, 0.5)]), 0.9)
    single = Neighbour(record("y", "y", meta(), [(FT, 0.8)]), 0.5)
    learned = warm_start([compared, single], strategies, ("standard", "mean"), limit=5, backbones=("small", "big"))
    # a backbone this search lacks, like a single-backbone search, chose none among ours: FT is
    # spread (its votes from both searches add up: first)
    assert learned == [FT, {**LLRD, BACKBONE: "big"}, {**LP, BACKBONE: "small"}]
    # one backbone: every configuration runs on it
    assert warm_start([compared], strategies, ("standard", "mean"), limit=5) == [FT, LLRD, LP]


def test_a_warm_start_of_a_lower_is_better_metric():
    strategies = Registry().select(["full_finetune", "linear_probe"])
    past = Neighbour(record("x", "x", meta(), [(FT, 0.30), (LP, 0.10)], maximize=False), 1.0)
    assert warm_start([past], strategies, ("mean",), limit=2) == [LP, FT]


def _search(csv, model_dir, out, **kw):
    return autotl.search(csv, model=model_dir, out=out, n_trials=2, strategies=["linear_probe", "full_finetune"],
                         progress=False, rescore=0, **kw)


def test_a_finished_search_is_recorded_and_the_next_one_learns_from_it(tiny_csv, tiny_model_dir, tmp_path):
    base = tmp_path / "kb.journal"
    first = _search(tiny_csv, tiny_model_dir, tmp_path / "one", knowledge=str(base))
    saved = knowledge.records(knowledge.open_knowledge(str(base)))
    assert len(saved) == 1
    rec = saved[0]
    assert rec["data"]["name"] == "data" and rec["meta"]["rows"] == 60 and rec["chosen"] == first.chosen
    assert {t["params"]["strategy"] for t in rec["trials"]} == {"linear_probe", "full_finetune"}
    assert set(rec["meta"]["probes"]) == {t["backbone"] for t in rec["transferability"]} != set()
    assert {"probe", "logme", "imbalance", "log2_tokens_p95"} <= set(rec["meta"])

    # The second search's own portfolio puts the first search's loser first; the warm start
    # puts the winner first.
    ranked = sorted((t for t in rec["trials"] if t["value"] is not None), key=lambda t: -t["value"])
    winner, loser = ranked[0]["params"], ranked[-1]["params"]
    assert winner["strategy"] != loser["strategy"]
    own = tmp_path / "portfolio.json"
    own.write_text(json.dumps({"evaluated_strategies": ["linear_probe", "full_finetune"], "buckets": [
        {"max_rows": None, "order": [{"name": "l", "params": loser}, {"name": "w", "params": winner}]}]}))
    second = _search(tiny_csv, tiny_model_dir, tmp_path / "two", knowledge=str(base), portfolio=str(own))
    info = json.loads((second.best_model / "autotl.json").read_text())
    assert [p["id"] for p in info["knowledge"]["learned_from"]] == [rec["id"]]
    assert info["knowledge"]["learned_from"][0]["similarity"] == pytest.approx(1.0)  # the same data
    trial0 = next(r for r in second.leaderboard if r["trial"] == 0)
    assert trial0["strategy"] == winner["strategy"]  # without the warm start it would be the loser
    report = (second.run_dir / "report.md").read_text()
    assert f"`{rec['id']}`" in report and "**Warm start:**" in report
    assert len(knowledge.records(knowledge.open_knowledge(str(base)))) == 2


def test_no_knowledge_reads_and_records_nothing(tiny_csv, tiny_model_dir, tmp_path, caplog):
    base = tmp_path / "kb.journal"
    _search(tiny_csv, tiny_model_dir, tmp_path / "one", knowledge=str(base))
    caplog.clear()  # only the second search's lines
    with caplog.at_level(logging.INFO, logger="autotl"):
        result = _search(tiny_csv, tiny_model_dir, tmp_path / "two", knowledge=str(base), use_knowledge=False)
    assert "warm start" not in caplog.text and "recorded in the knowledge base" not in caplog.text
    assert "knowledge" not in json.loads((result.best_model / "autotl.json").read_text())
    assert len(knowledge.records(knowledge.open_knowledge(str(base)))) == 1


def test_a_corrupt_knowledge_base_is_one_warning_and_the_search_goes_on_cold(tiny_csv, tiny_model_dir, tmp_path,
                                                                            caplog):
    base = tmp_path / "kb.journal"
    base.write_text("this is not a journal\n" * 3)
    with caplog.at_level(logging.INFO, logger="autotl"):
        result = _search(tiny_csv, tiny_model_dir, tmp_path / "run", knowledge=str(base))
    assert result.best_model is not None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "knowledge base" in r.getMessage()]
    assert len(warnings) == 1, [w.getMessage() for w in warnings]  # read once, never written to
    assert "unreadable" in warnings[0].getMessage() and "\n" not in warnings[0].getMessage()
    assert "Traceback" not in caplog.text
    assert base.read_text() == "this is not a journal\n" * 3  # left as found: nothing appended


def test_an_unreachable_knowledge_url_is_one_warning_and_the_search_goes_on_cold(tiny_csv, tiny_model_dir,
                                                                                 tmp_path, caplog):
    url = f"sqlite:///{tmp_path}/no/such/dir/kb.db"  # fails at once, as a refused connection would
    with caplog.at_level(logging.INFO, logger="autotl"):
        result = _search(tiny_csv, tiny_model_dir, tmp_path / "run", knowledge=url)
    assert result.best_model is not None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "knowledge base" in r.getMessage()]
    assert len(warnings) == 1 and "unreadable" in warnings[0].getMessage(), [w.getMessage() for w in warnings]


def test_a_missing_knowledge_file_is_created_without_a_warning_and_records_the_search(tiny_csv, tiny_model_dir,
                                                                                      tmp_path, caplog):
    base = tmp_path / "new" / "kb.journal"
    with caplog.at_level(logging.INFO, logger="autotl"):
        _search(tiny_csv, tiny_model_dir, tmp_path / "run", knowledge=str(base))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "knowledge" in r.getMessage()]
    found = knowledge.records(knowledge.open_knowledge(str(base)))
    assert len(found) == 1 and found[0]["trials"]
    assert all(isinstance(t["seconds"], float) and t["seconds"] > 0 for t in found[0]["trials"])  # the cost


def test_the_knowledge_command_lists_shows_and_forgets(tiny_csv, tiny_model_dir, tmp_path):
    from autotl.cli import main

    base = tmp_path / "kb.journal"
    _search(tiny_csv, tiny_model_dir, tmp_path / "one", knowledge=str(base))
    rid = knowledge.records(knowledge.open_knowledge(str(base)))[0]["id"]

    def run(*argv):
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["knowledge", *argv, "--knowledge", str(base)])
        return code, out.getvalue(), err.getvalue()

    code, out, _ = run("list")
    assert code == 0 and rid in out and "1 recorded in" in out
    code, out, _ = run("show", rid)
    assert code == 0 and json.loads(out)["id"] == rid
    code, _, err = run("show", "nope")
    assert code == 2 and "no knowledge record 'nope'" in err
    code, out, _ = run("forget", rid)
    assert code == 0 and knowledge.records(knowledge.open_knowledge(str(base))) == []


def test_the_shipped_starter_records_are_read_and_cannot_be_forgotten(monkeypatch, tmp_path):
    from autotl.cli import main

    starter = tmp_path / "starter.json"
    starter.write_text(json.dumps({"records": [record("starter-x", "x", meta(), [(FT, 0.9)])]}))
    monkeypatch.setattr(knowledge, "STARTER_FILE", starter)
    monkeypatch.setenv("AUTOTL_STARTER_KNOWLEDGE", "1")
    assert [r["id"] for r in knowledge.starter_records()] == ["starter-x"]
    err = io.StringIO()
    with redirect_stderr(err):
        assert main(["knowledge", "forget", "starter-x", "--knowledge", str(tmp_path / "kb.journal")]) == 2
    assert "cannot be forgotten" in err.getvalue()
    monkeypatch.setenv("AUTOTL_STARTER_KNOWLEDGE", "0")
    assert knowledge.starter_records() == []


def test_knowledge_list_never_prints_the_urls_password(monkeypatch, capsys):
    from autotl.cli import main

    seen = []
    monkeypatch.setattr(knowledge, "open_knowledge", lambda location: seen.append(location) or object())
    monkeypatch.setattr(knowledge, "records", lambda storage: [])
    monkeypatch.setenv("AUTOTL_KNOWLEDGE", "postgresql://team:s3cret@db.example/autotl")
    assert main(["knowledge", "list"]) == 0
    out = capsys.readouterr().out
    assert seen == ["postgresql://team:s3cret@db.example/autotl"]  # the password still reaches the database
    assert "s3cret" not in out and "recorded in postgresql://team:***@db.example/autotl" in out, out


class _Bounds(SpaceRecorder):
    """autotl's stand-in trial, answering with a configuration's values, that also keeps a
    check of each range (`seen`: param -> is this value inside it?)."""

    def __init__(self, params):
        super().__init__(params)
        self.seen = {}

    def suggest_float(self, name, low, high, **kw):
        self.seen[name] = lambda value: low <= value <= high
        return super().suggest_float(name, low, high, **kw)

    def suggest_int(self, name, low, high, **kw):
        self.seen[name] = lambda value: low <= value <= high
        return super().suggest_int(name, low, high, **kw)

    def suggest_categorical(self, name, choices):
        self.seen[name] = lambda value: value in choices
        return super().suggest_categorical(name, choices)


def test_the_shipped_starter_knowledge_is_well_formed_and_warm_starts_a_search_like_its_own(monkeypatch):
    from autotl.objective import BACKBONE, POOLING, STRATEGY

    monkeypatch.setenv("AUTOTL_STARTER_KNOWLEDGE", "1")
    shipped = knowledge.starter_records()
    assert len(shipped) >= 7 and len({r["data"]["name"] for r in shipped}) >= 7
    registry = Registry().strategies()
    for rec in shipped:
        assert set(knowledge.SCALES) <= set(rec["meta"]), rec["id"]
        assert all(isinstance(rec["meta"][k], (int, float)) for k in knowledge.SCALES), rec["id"]
        done = [t for t in rec["trials"] if t["state"] == "complete"]
        assert done and all(isinstance(t["value"], float) and t["seconds"] > 0 for t in done), rec["id"]
        for t in done:  # every configuration runs here, inside its strategy's own space
            params = t["params"]
            if params[STRATEGY] not in registry:  # a plugin's strategy: only where it is installed
                assert params[STRATEGY] in ("lora", "ia3"), params
                continue
            bounds = _Bounds(params)
            registry[params[STRATEGY]].strategy.search_space(bounds)
            for name, value in params.items():
                if name in (STRATEGY, POOLING, BACKBONE):
                    continue
                assert name in bounds.seen and bounds.seen[name](value), (rec["id"], name, value)
        # a search on data like this record's learns from it first, and gets configurations
        found = nearest(shipped, rec["meta"], k=3)
        assert found and found[0].similarity == pytest.approx(1.0)
        assert rec["meta"] == found[0].record["meta"]
        strategies = Registry().select(sorted({t["params"][STRATEGY] for t in done} & set(registry)))
        assert warm_start(found, strategies, ("mean", "standard"), limit=6), rec["id"]


def test_the_report_says_when_similar_searches_taught_nothing_runnable():
    from autotl.report import knowledge_lines

    past = [{"id": "r1", "name": "x", "rows": 300, "similarity": 0.5}]
    assert "first 1 configuration was learned" in knowledge_lines({"learned_from": past, "first": [FT]})[0]
    nothing = knowledge_lines({"learned_from": past, "first": []})[0]
    assert "had no best configuration this search can run" in nothing and "first 0" not in nothing
