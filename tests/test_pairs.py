"""Text pairs: the tokenizer's pair encoding, two text columns inferred or named, a search and
predict on pairs, transformers.pipeline's text_pair and ONNX agreeing with autotl, the errors."""

from __future__ import annotations

import io
import json
import logging
import random
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pandas as pd
import pytest
import torch

import autotl
from autotl.backbone import load_tokenizer
from autotl.batching import encode, model_inputs
from autotl.cli import main
from autotl.data import load_data
from autotl.lengths import token_lengths
from autotl.testing import NEGATIVE, NEUTRAL, POSITIVE

from conftest import fails, write_csv  # noqa: E402

HEADER = ("question", "answer", "label")
LABELS = ("different", "same")


def pair_rows(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(question, answer, label) rows: "same" when both texts carry a word of one sentiment, so
    the label depends on both columns."""
    rng = random.Random(seed)

    def text(words):
        return " ".join(rng.sample(NEUTRAL, 3) + [rng.choice(words)] + rng.sample(NEUTRAL, 2))

    rows = []
    for i in range(n):
        first, second = (POSITIVE if i % 2 else NEGATIVE), (POSITIVE if i // 2 % 2 else NEGATIVE)
        rows.append((text(first), text(second), LABELS[first is second]))
    rng.shuffle(rows)
    return rows


def cli(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def moved_model(tiny_model_dir, pooling: str, labels=LABELS):
    """A model with weights moved well off their fresh init: outputs differ clearly from row to
    row and between token types (a fresh tiny BERT's type embeddings barely differ)."""
    from autotl.model import build_model

    torch.manual_seed(1)
    model = build_model(tiny_model_dir, pooling, num_outputs=len(labels), label_names=labels, regression=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def saved_run(folder, tiny_model_dir, *, pooling: str = "standard", pair=("question", "answer")):
    """RUN_DIR/best holding a moved model whose autotl.json reads a text pair (or one column)."""
    from autotl.export import save_best

    data = {"text_col": ",".join(pair) if pair else "text", "task": "classification", "label_names": list(LABELS)}
    if pair:
        data["text_pair"] = list(pair)
    folder.mkdir(parents=True, exist_ok=True)
    save_best(moved_model(tiny_model_dir, pooling), load_tokenizer(tiny_model_dir), folder,
              {"trial": 0, "study": "test", "data": data}, max_length=32)
    return folder


# -- encoding ---------------------------------------------------------------------------------

@pytest.mark.parametrize("max_length", [64, 9])
def test_pair_encoding_is_the_tokenizers_own_with_the_sep_between_segments(tiny_model_dir, max_length):
    tokenizer = load_tokenizer(tiny_model_dir)
    pairs = [(a, b) for a, b, _ in pair_rows(10)] + [("good", "the movie was really quite a dull story")]
    encoded = encode(tokenizer, pairs, np.zeros(len(pairs)), max_length, key="pairs")
    own = tokenizer([a for a, _ in pairs], [b for _, b in pairs], truncation="longest_first", max_length=max_length)
    assert [list(ids) for ids in encoded.ids] == own["input_ids"]
    assert [list(types) for types in encoded.types] == own["token_type_ids"]
    for ids, types in zip(encoded.ids, encoded.types):
        first_sep = ids.index(tokenizer.sep_token_id)
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id and first_sep < len(ids) - 1
        assert set(types[:first_sep + 1]) == {0} and set(types[first_sep + 1:]) == {1}  # segment 1 after [SEP]
    assert max(encoded.lengths) <= max_length
    # token lengths (the --max-length auto profile) count both texts uncut, special tokens included
    whole = tokenizer([a for a, _ in pairs], [b for _, b in pairs])["input_ids"]
    assert token_lengths(tokenizer, pairs).tolist() == [len(ids) for ids in whole]


def test_every_forward_path_feeds_the_token_types(tiny_model_dir):
    """Padded batches, the inference loop, the feature cache and the layer cache give what the
    model computes with the pairs' token types, and that differs from segment 0 everywhere."""
    from dataclasses import replace

    from autotl.metrics import get_metric
    from autotl.train import FitSettings, StageForward, infer

    tokenizer = load_tokenizer(tiny_model_dir)
    rows = pair_rows(12)
    encoded = encode(tokenizer, [(a, b) for a, b, _ in rows], np.zeros(12), 32, key="forward-paths")
    index = np.arange(12)
    ids, mask, types = model_inputs(encoded, index, tokenizer.pad_token_id)
    assert types.shape == ids.shape and (types[mask == 0] == 0).all() and types.sum() > 0
    assert len(model_inputs(encode(tokenizer, ["good film"], [0], 32, key="one"), [0], 0)) == 2  # single: no types
    model = moved_model(tiny_model_dir, "mean")
    with torch.no_grad():
        expected = model(ids, mask, types)
        assert (expected - model(ids, mask)).abs().max() > 1e-3  # the types matter to this model
    assert np.allclose(infer(model, encoded, pad_id=tokenizer.pad_token_id, device="cpu"), expected, atol=1e-5)
    settings = FitSettings(metric=get_metric("accuracy", "classification"), regression=False,
                           pad_id=tokenizer.pad_token_id)
    for frozen in ("all", "bottom"):  # the feature cache ("pooled"), the layer cache ("layers")
        for p in model.encoder_parameters() if frozen == "all" else [*model.blocks()[0].parameters(),
                                                                      *model.layers[0].parameters()]:
            p.requires_grad_(False)
        forward = StageForward(model, replace(settings, use_cache=True), encoder_frozen=frozen == "all")
        assert forward.mode == ("pooled" if frozen == "all" else "layers")
        with torch.no_grad():
            _, got = forward(encoded, index)
        assert torch.allclose(got, expected, atol=1e-5), frozen
        for p in model.parameters():
            p.requires_grad_(True)


# -- columns ----------------------------------------------------------------------------------

def test_two_free_text_columns_are_inferred_as_a_pair_and_logged(tmp_path, caplog):
    rows = [(i, q, a, f"user {i % 3}", label) for i, (q, a, label) in enumerate(pair_rows(30))]
    path = write_csv(tmp_path / "d.csv", rows, header=("id", "question", "answer", "author", "verdict"))
    with caplog.at_level(logging.INFO, logger="autotl"):
        target = load_data(path)
    assert target.text_pair == ("question", "answer") and target.text_col == "question,answer"
    assert target.label_col == "verdict"
    assert "text pair 'question' + 'answer' (inferred: two text columns), label column 'verdict'" in caplog.text
    assert all(isinstance(t, tuple) and len(t) == 2 for t in target.train.texts + target.val.texts)
    by_question = {q: a for q, a, _ in pair_rows(30)}
    assert all(by_question[q] == a for q, a in target.train.texts)  # each row's own two cells
    assert target.schema()["text_pair"] == ["question", "answer"]

    third = [(q, a, f"{a} and more words", label) for q, a, label in pair_rows(30)]
    single = load_data(write_csv(tmp_path / "three.csv", third, header=("question", "answer", "context", "label")))
    assert single.text_pair is None and single.text_col == "question"  # three free-text columns: no pair
    assert "text_pair" not in single.schema()  # autotl.json of single texts as before pairs


def test_text_col_names_a_pair_in_its_order(tmp_path, caplog):
    path = write_csv(tmp_path / "d.csv", pair_rows(30), header=HEADER)
    with caplog.at_level(logging.INFO, logger="autotl"):
        target = load_data(path, text_col="answer, question")
    assert target.text_pair == ("answer", "question")
    assert {(a, q) for q, a, _ in pair_rows(30)} >= set(target.train.texts)
    assert "text pair 'answer' + 'question', label column 'label' (inferred)" in caplog.text
    assert load_data(path, text_col="answer").text_pair is None  # one name: one text column


def test_many_pairs_cut_search_head_tail_per_segment_and_the_log_says_so(tmp_path, tiny_model_dir, caplog):
    from autotl.api import prepare
    from autotl.budget import Budget
    from autotl.config import RunConfig
    from autotl.knowledge import meta_features
    from autotl.lengths import HEAD_TAIL, TRUNCATION

    config = RunConfig.build(write_csv(tmp_path / "d.csv", pair_rows(30), header=HEADER), model=tiny_model_dir,
                             max_length=8, out=str(tmp_path / "run"), strategies=("linear_probe",))
    with caplog.at_level(logging.INFO, logger="autotl"):
        prepared = prepare(config, device="cpu", budget=Budget(None), progress=False)
    assert prepared.profile["lengths"]["truncated"] == 1.0  # every pair is longer than 8 tokens
    cut = prepared.setup.head_tail  # so text.truncation is searched, on rows of their own
    assert cut is not None and prepared.setup.for_params({TRUNCATION: HEAD_TAIL}) is cut
    assert "head+tail truncation (each text of a pair within its longest-first share) is searched" in caplog.text
    assert prepared.profile["text_pair"] == ["question", "answer"]
    for setup in (prepared.setup, cut):
        assert setup.train.types is not None and max(setup.train.lengths) == 8
    assert cut.train.ids != prepared.setup.train.ids and cut.train.key != prepared.setup.train.key
    assert meta_features(prepared.target, prepared.setup)["text_pair"] == 1.0


def test_head_tail_pairs_that_fit_are_the_tokenizers_own_encoding(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    pairs = [(a, b) for a, b, _ in pair_rows(10)]
    encoded = encode(tokenizer, pairs, np.zeros(len(pairs)), 64, key="ht", truncation="head_tail")
    own = tokenizer([a for a, _ in pairs], [b for _, b in pairs])
    assert [list(ids) for ids in encoded.ids] == own["input_ids"]
    assert [list(types) for types in encoded.types] == own["token_type_ids"]


@pytest.mark.parametrize("words", [(30, 4), (4, 30), (30, 30), (31, 30), (30, 31), (12, 9)])
def test_head_tail_pairs_keep_each_segments_longest_first_share_with_its_beginning_and_end(tiny_model_dir, words):
    tokenizer = load_tokenizer(tiny_model_dir)
    vocab = tokenizer.get_vocab()
    first = " ".join(["good"] + ["the"] * (words[0] - 2) + ["bad"])
    second = " ".join(["film"] + ["a"] * (words[1] - 2) + ["was"])
    encoded = encode(tokenizer, [(first, second)], np.zeros(1), 18, key="ht", truncation="head_tail")
    ids, types = list(encoded.ids[0]), list(encoded.types[0])
    own = tokenizer(first, second, truncation="longest_first", max_length=18)
    assert len(ids) == len(own["input_ids"]) == 18
    sep = ids.index(tokenizer.sep_token_id)
    assert sep == own["input_ids"].index(tokenizer.sep_token_id)  # each segment keeps the tokenizer's share
    assert types == own["token_type_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert ids[1] == vocab["good"] and ids[sep - 1] == vocab["bad"]  # the first text's beginning and end
    assert ids[sep + 1] == vocab["film"] and ids[-2] == vocab["was"]  # the second's


def test_longest_first_shares_are_the_tokenizers(tiny_model_dir):
    from autotl.pairs import longest_first_shares

    tokenizer = load_tokenizer(tiny_model_dir)
    for a in range(1, 16, 2):
        for b in range(1, 16, 3):
            for room in (2, 3, 8, 11, 30):
                first, second = " ".join(["the"] * a), " ".join(["a"] * b)
                own = tokenizer(first, second, truncation="longest_first", max_length=room + 3)["input_ids"]
                sep = own.index(tokenizer.sep_token_id)
                assert longest_first_shares(a, b, room) == (sep - 1, len(own) - sep - 2), (a, b, room)


# -- a search on pairs, then predict ---------------------------------------------------------

@pytest.fixture(scope="module")
def pair_run(tmp_path_factory, tiny_model_dir):
    """A --standard-head search on pairs (inferred) cut at 12 tokens, with a test set: its run directory."""
    root = tmp_path_factory.mktemp("pairs")
    data = write_csv(root / "data.csv", pair_rows(60), header=HEADER)
    test = write_csv(root / "test.csv", pair_rows(16, seed=3), header=HEADER)
    code, out, err = cli(["search", data, "--model", tiny_model_dir, "--n-trials", "2", "--out", root / "run",
                          "--strategies", "full_finetune,linear_probe", "--standard-head", "--test", test,
                          "--max-length", "12",
                          "--no-progress", "--no-knowledge", "--no-soup", "--rescore", "0", "--device", "cpu"])
    assert code == 0, out + err
    return root / "run"


def test_a_search_on_pairs_predicts_from_csv_and_json_lines(pair_run, tmp_path):
    info = json.loads((pair_run / "best" / "autotl.json").read_text())
    assert info["data"]["text_pair"] == ["question", "answer"] and info["data"]["text_col"] == "question,answer"
    rows = pair_rows(8, seed=5)
    frame = pd.DataFrame(rows, columns=HEADER).drop(columns="label")
    frame.insert(0, "id", range(len(rows)))
    frame.to_csv(tmp_path / "new.csv", index=False)
    code, out, err = cli(["predict", pair_run, tmp_path / "new.csv", "-o", tmp_path / "preds.csv"])
    assert code == 0, err
    preds = pd.read_csv(tmp_path / "preds.csv")
    assert list(preds.columns) == ["question", "answer", "prediction", "prob_different", "prob_same"]
    assert preds["question"].tolist() == [q for q, _, _ in rows] and preds["answer"].tolist() == [a for _, a, _ in rows]
    assert set(preds["prediction"]) <= set(LABELS)
    (tmp_path / "new.jsonl").write_text("".join(json.dumps({"answer": a, "question": q}) + "\n" for q, a, _ in rows))
    code, out, err = cli(["predict", pair_run, tmp_path / "new.jsonl"])
    assert code == 0, err
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(out)), preds)
    # the test set was scored once and its rows show both texts
    assert info["scores"]["test"]["rows"] == 16
    shown = pd.read_csv(pair_run / "test_predictions.csv")["text"]
    assert all(" [SEP] " in text for text in shown)


def test_pipeline_with_text_pair_gives_autotl_predicts_probabilities(pair_run, tmp_path):
    from transformers import pipeline

    rows = pair_rows(12, seed=7)
    lengths = token_lengths(load_tokenizer(str(pair_run / "best")), [(q, a) for q, a, _ in rows])
    assert min(lengths) > 12  # every pair is cut: the pipeline must cut it as autotl does
    ours = autotl.predict(pair_run, pd.DataFrame(rows, columns=HEADER), device="cpu")
    classify = pipeline("text-classification", model=str(pair_run / "best"), device="cpu")
    theirs = classify([{"text": q, "text_pair": a} for q, a, _ in rows], top_k=None, truncation=True)  # as the card shows
    by_label = [{t["label"]: t["score"] for t in row} for row in theirs]
    for label in LABELS:
        assert [p[label] for p in by_label] == pytest.approx(ours[f"prob_{label}"].tolist(), abs=1e-6)
    # swapping the two texts changes the segments, and so the probabilities: the pair is read as a pair
    swapped = autotl.predict(pair_run, pd.DataFrame(rows, columns=HEADER), text_col="answer,question", device="cpu")
    assert (swapped["prob_same"] - ours["prob_same"]).abs().max() > 1e-7


def test_the_model_card_and_report_show_the_pair(pair_run):
    card = (pair_run / "best" / "README.md").read_text()
    assert "text pair `question` + `answer`" in card
    assert 'classify({"text": "the first text", "text_pair": "the second text"}, truncation=True)' in card
    assert "text pair `question` + `answer`" in (pair_run / "report.md").read_text()


def test_onnx_predict_on_pairs_equals_pytorch(tmp_path, tiny_model_dir):
    pytest.importorskip("onnxruntime")
    run = saved_run(tmp_path / "run", tiny_model_dir)
    code, out, err = cli(["export", run, "--onnx"])
    assert code == 0, out + err
    rows = pd.DataFrame(pair_rows(24, seed=9), columns=HEADER)
    torch_probs = autotl.predict(run, rows, device="cpu")
    onnx_probs = autotl.predict(run, rows, onnx=True)
    assert torch_probs["prob_same"].std() > 1e-3  # rows differ: the comparison means something
    pd.testing.assert_frame_equal(onnx_probs, torch_probs, atol=1e-5, check_exact=False)
    # fed segment 0 for the second texts (as before pairs), the model would answer otherwise
    model, tokenizer, info = autotl.load(run)
    pairs = list(zip(rows["question"], rows["answer"]))
    ids, mask, types = model_inputs(encode(tokenizer, pairs, np.zeros(24), 32, key="onnx"), np.arange(24), 0)
    with torch.no_grad():
        assert (model(ids, mask, types) - model(ids, mask)).abs().max() > 1e-3


# -- bad input: one line, exit 2 --------------------------------------------------------------

@pytest.mark.parametrize("text_col, words", [
    ("question,missing", "column 'missing' not found"),
    ("question,question", "a text pair needs two different columns, got 'question' twice"),
    ("question,answer,label", "got 3 names in 'question,answer,label'"),
    ("question,", "got 2 names"),
])
def test_bad_text_pairs_at_search_time(tmp_path, tiny_model_dir, capsys, no_training, text_col, words):
    data = write_csv(tmp_path / "d.csv", pair_rows(30), header=HEADER)
    line = fails(capsys, ["search", data, "--model", tiny_model_dir, "--text-col", text_col, "--out", tmp_path / "r"])
    assert words in line, line


def test_a_pair_without_a_label_column_is_one_error(tmp_path, tiny_model_dir, capsys, no_training):
    data = write_csv(tmp_path / "d.csv", [(q, a) for q, a, _ in pair_rows(30)], header=("question", "answer"))
    line = fails(capsys, ["search", data, "--model", tiny_model_dir, "--out", tmp_path / "r"])
    assert "only the text pair's columns (question, answer); a label column is needed" in line, line


def test_bad_text_pairs_at_predict_time(tmp_path, tiny_model_dir, capsys):
    pair_model = saved_run(tmp_path / "pair", tiny_model_dir, pooling="mean")
    single_model = saved_run(tmp_path / "single", tiny_model_dir, pooling="mean", pair=None)
    rows = pair_rows(4)
    only_question = write_csv(tmp_path / "q.csv", [(q,) for q, _, _ in rows], header=("question",))
    both = write_csv(tmp_path / "both.csv", [(q, a, q) for q, a, _ in rows], header=("question", "answer", "text"))
    line = fails(capsys, ["predict", pair_model, only_question])
    assert "column 'answer' not found" in line and "text pair 'question' + 'answer'" in line \
        and "--text-col A,B" in line, line
    line = fails(capsys, ["predict", pair_model, both, "--text-col", "question"])
    assert "the model reads text pairs ('question' + 'answer')" in line and "--text-col question,answer" in line, line
    line = fails(capsys, ["predict", single_model, both, "--text-col", "question,answer"])
    assert "the model reads one text column ('text')" in line, line
    line = fails(capsys, ["predict", pair_model, both, "--text-col", "question,answer,text"])
    assert "got 3 names" in line, line
    assert cli(["predict", single_model, both])[0] == 0  # a single-text model reads its one column as before


def test_a_multitask_csv_with_two_free_text_columns_says_the_pair_was_inferred(tmp_path, caplog):
    rows = [(q, a, label, f"{i % 3 * 0.5:.1f}") for i, (q, a, label) in enumerate(pair_rows(30))]
    path = write_csv(tmp_path / "d.csv", rows, header=("question", "answer", "verdict", "score"))
    with caplog.at_level(logging.INFO, logger="autotl"):
        target = load_data(path, label_col="verdict,score")
    assert target.text_pair == ("question", "answer") and len(target.tasks) == 2
    assert "text pair 'question' + 'answer' (inferred: two text columns); 2 tasks" in caplog.text
    with caplog.at_level(logging.INFO, logger="autotl"):
        load_data(path, label_col="verdict,score", text_col="question,answer")
    assert "text pair 'question' + 'answer'; 2 tasks" in caplog.text  # named: not "inferred"
