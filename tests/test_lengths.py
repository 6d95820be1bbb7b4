"""Long texts: token-length profile, `--max-length auto`, head+tail truncation searched when many rows are cut."""

from __future__ import annotations

import io
import json
import logging
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest

import autotl
from autotl import lengths as ln
from autotl.batching import encode, truncation_of
from autotl.cli import main
from autotl.testing import NEGATIVE, NEUTRAL, POSITIVE

from conftest import write_csv  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_token_lengths_count_every_token_and_the_special_ones(tokenizer):
    texts = ["good", "the movie was really quite bad", ""]
    assert ln.token_lengths(tokenizer, texts).tolist() == [len(tokenizer(t)["input_ids"]) for t in texts] == [3, 8, 2]


def test_profile_percentiles_and_the_share_cut():
    found = ln.profile(np.arange(1, 101), max_length=90)
    assert (found["p50"], found["p95"], found["max"]) == (51, 96, 100)
    assert found["truncated"] == pytest.approx(0.10)
    assert ln.describe(found) == "median 51, 95th percentile 96, longest 100; 10.0% of rows longer than max_length 90"


@pytest.mark.parametrize("lengths, limit, expected", [(np.arange(1, 101), 512, 96), (np.arange(1, 101), 64, 64),
                                                      (np.full(10, 3), 512, 8)])
def test_auto_max_length_is_the_95th_percentile_within_the_limits(lengths, limit, expected):
    assert ln.auto_max_length(lengths, limit) == expected


def test_model_limit_reads_position_embeddings_and_the_tokenizer(tokenizer):
    from transformers import BertConfig, MPNetConfig

    assert ln.model_limit(tokenizer, BertConfig(max_position_embeddings=512)) == min(512, tokenizer.model_max_length)
    assert ln.model_limit(None, MPNetConfig(max_position_embeddings=514)) == 512  # two positions reserved


def test_head_tail_keeps_the_beginning_and_the_end(tokenizer):
    words = " ".join(["good"] + ["the"] * 30 + ["bad"])
    head = encode(tokenizer, [words, "good film"], [0, 1], 18, key="h").ids
    both = encode(tokenizer, [words, "good film"], [0, 1], 18, key="ht", truncation=ln.HEAD_TAIL).ids
    vocab = tokenizer.get_vocab()
    assert len(head[0]) == len(both[0]) == 18
    assert both[0][0] == vocab["[CLS]"] and both[0][-1] == vocab["[SEP]"]
    assert both[0][1] == vocab["good"] and both[0][-2] == vocab["bad"]  # the end survives head+tail ...
    assert vocab["bad"] not in head[0]  # ... not the head cut
    assert both[1] == head[1]  # a short text is not cut at all
    assert truncation_of({"params": {ln.TRUNCATION: ln.HEAD_TAIL}}) == ln.HEAD_TAIL
    assert truncation_of({"params": {}}) == truncation_of({}) == ln.HEAD


def long_rows(n: int) -> list[tuple[str, str]]:
    """The label word comes last, after 12 neutral words: a head cut at 8 tokens loses it."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        rows.append((" ".join([*rng.choice(NEUTRAL, 12), rng.choice(POSITIVE if positive else NEGATIVE)]),
                     "positive" if positive else "negative"))
    return rows


def test_many_rows_cut_search_head_tail_and_the_report_says_so(tmp_path, tiny_model_dir, caplog):
    with caplog.at_level(logging.INFO, logger="autotl"):
        result = autotl.search(write_csv(tmp_path / "d.csv", long_rows(60)), model=tiny_model_dir, n_trials=4,
                               strategies=["linear_probe"], max_length=8, out=str(tmp_path / "run"),
                               progress=False, use_knowledge=False)
    assert "100% of the rows are cut at 8 tokens: head+tail truncation is searched too" in caplog.text
    assert "(pass --max-length auto or a larger value to keep more)" in caplog.text
    drawn = {row["params"][ln.TRUNCATION] for row in result.leaderboard}
    assert drawn <= {ln.HEAD, ln.HEAD_TAIL} and drawn, result.leaderboard
    report = (tmp_path / "run" / "report.md").read_text()
    assert "- text length in tokens (training rows): median 15, 95th percentile 15" in report
    assert "<li>text length in tokens (training rows)" in (tmp_path / "run" / "report.html").read_text()


def test_standard_head_searches_do_not_search_head_tail_and_say_why(tmp_path, tiny_model_dir, caplog):
    # --standard-head promises a model transformers.pipeline serves as autotl does; a pipeline
    # cuts at the head (found when a pair search chose a head+tail full fine-tune: its pipeline
    # probabilities were 2e-5 off autotl's).
    with caplog.at_level(logging.INFO, logger="autotl"):
        result = autotl.search(write_csv(tmp_path / "d.csv", long_rows(60)), model=tiny_model_dir, n_trials=2,
                               strategies=["linear_probe"], max_length=8, out=str(tmp_path / "run"),
                               standard_head=True, progress=False, use_knowledge=False)
    assert "head+tail truncation is not searched with --standard-head" in caplog.text
    assert all(ln.TRUNCATION not in row["params"] for row in result.leaderboard), result.leaderboard


def test_a_head_tail_trial_trains_and_predicts_on_head_tail_rows(tmp_path, tiny_model_dir):
    from autotl.api import prepare
    from autotl.budget import Budget
    from autotl.config import RunConfig

    config = RunConfig.build(write_csv(tmp_path / "d.csv", long_rows(60)), model=tiny_model_dir, max_length=8,
                             out=str(tmp_path / "run"))
    setup = prepare(config, device="cpu", budget=Budget(None), progress=False).setup
    cut = setup.for_params({ln.TRUNCATION: ln.HEAD_TAIL})
    assert cut is setup.head_tail and cut.for_params({ln.TRUNCATION: ln.HEAD_TAIL}) is cut
    assert setup.for_params({ln.TRUNCATION: ln.HEAD}) is setup
    assert cut.train.ids != setup.train.ids and cut.train.key != setup.train.key  # own rows, own caches
    assert all(len(ids) == 8 for ids in cut.train.ids)


def test_a_head_tail_trial_reads_its_unlabeled_rows_cut_head_tail_too(tmp_path, tiny_model_dir):
    from autotl.api import prepare
    from autotl.budget import Budget
    from autotl.config import RunConfig

    extra = write_csv(tmp_path / "u.csv", [(t,) for t, _ in long_rows(10)], header=("text",))
    config = RunConfig.build(write_csv(tmp_path / "d.csv", long_rows(60)), model=tiny_model_dir, max_length=8,
                             out=str(tmp_path / "run"), unlabeled=extra)
    setup = prepare(config, device="cpu", budget=Budget(None), progress=False).setup
    cut = setup.for_params({ln.TRUNCATION: ln.HEAD_TAIL})
    assert cut is not setup and len(cut.unlabeled) == 10
    assert cut.unlabeled.ids != setup.unlabeled.ids and cut.unlabeled.key != setup.unlabeled.key
    assert cut.corpus.ids == cut.train.ids + cut.unlabeled.ids  # tapt's masked-LM texts, cut alike


def test_max_length_auto_from_the_command_line(tmp_path, tiny_model_dir, caplog):
    data = write_csv(tmp_path / "d.csv", long_rows(40))
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), caplog.at_level(logging.INFO, logger="autotl"):
        code = main(["search", data, "--model", tiny_model_dir, "--n-trials", "1", "--strategies", "linear_probe",
                     "--max-length", "auto", "--out", str(tmp_path / "run"), "--no-progress", "--no-knowledge"])
    assert code == 0, err.getvalue()
    assert "max length auto: 15 tokens (the training texts' 95th percentile" in caplog.text, caplog.text
    assert json.loads((tmp_path / "run" / "best" / "autotl.json").read_text())["max_length"] == 15
    with redirect_stdout(io.StringIO()), redirect_stderr(err := io.StringIO()), pytest.raises(SystemExit) as bad:
        main(["search", data, "--max-length", "long"])
    assert bad.value.code == 2 and "invalid max length 'long': use a number of tokens or auto" in err.getvalue()


def test_saving_a_model_leaves_the_shared_tokenizers_limit_alone(tmp_path, tiny_model, tokenizer):
    from transformers import AutoTokenizer

    from autotl.export import write_model

    before = tokenizer.model_max_length
    write_model(tiny_model(), tokenizer, tmp_path / "m", max_length=9)
    assert tokenizer.model_max_length == before  # was left at 9 for every later use in the process
    assert AutoTokenizer.from_pretrained(tmp_path / "m").model_max_length == 9  # the saved one cuts where we did
