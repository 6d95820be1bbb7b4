"""best/README.md: a Hugging Face model card whose metadata the hub's own parser reads back."""

from __future__ import annotations

import io
import json
import logging
from contextlib import redirect_stderr, redirect_stdout

import pytest
from huggingface_hub import ModelCard

from autotl.cli import main
from autotl.model_card import card_text, hub_id
from autotl.testing import sentiment_rows

from conftest import write_csv  # noqa: E402

INFO = {"backbone": "all-MiniLM-L6-v2", "metric": "accuracy", "trial": 3, "strategy": "lp_ft",
        "summary": "probe then fine-tune", "max_length": 128,
        "head": {"pooling": "standard", "pipeline_compatible": True},
        "data": {"text_col": "text", "label_col": "label", "task": "classification",
                 "label_names": ["a|b", "<c>"], "num_train": 80, "num_val": 20, "num_test": 30,
                 "source": "/data/reviews.csv"},
        "scores": {"val": 0.91234, "test": {"rows": 30, "metrics": {"accuracy": 0.9, "f1_macro": 0.85}}},
        "refit": {"rows": 100, "epochs": 3}, "soup": None}


def test_the_card_metadata_reads_back_through_huggingface_hub():
    card = ModelCard(card_text(INFO, [{"trial": 3, "state": "complete", "strategy": "lp_ft", "head": "standard",
                                       "score": 0.91234, "seconds": 12.5}]))
    meta = card.data.to_dict()
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-classification"
    assert "autotl" in meta["tags"] and "strategy:lp_ft" in meta["tags"]
    assert set(meta["metrics"]) == {"accuracy", "f1_macro"}
    results = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results == {("validation", "accuracy"): 0.9123, ("test", "accuracy"): 0.9,
                       ("test", "f1_macro"): 0.85}
    assert "| 3 | lp_ft | standard | 0.9123 | 12.5 |" in card.text
    assert 'pipeline("text-classification"' in card.text
    assert "`a\\|b`" in card.text  # a label's | cannot break the table or list


def test_a_mean_pooled_head_is_not_offered_to_transformers_pipeline():
    info = {**INFO, "head": {"pooling": "mean", "pipeline_compatible": False}, "backbone": "/models/mine"}
    card = ModelCard(card_text(info))
    assert card.data.library_name == "autotl"
    assert card.data.base_model is None  # a local directory is no hub id
    assert "pipeline(" not in card.text and "model, tokenizer, info = autotl.load(" in card.text


def test_a_multitask_card_shows_per_task_columns_and_task_outputs():
    info = {**INFO, "head": {"pooling": "mean", "pipeline_compatible": False, "multitask": True},
            "data": {**INFO["data"], "task": "multitask", "label_col": "sentiment,score", "label_names": []}}
    text = ModelCard(card_text(info)).text
    assert "one column per task" in text and "autotl.task_outputs(" in text
    assert "autotl.task_outputs(" not in ModelCard(card_text(INFO)).text


@pytest.mark.parametrize("name, expected", [("all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2"),
                                            ("bert-base-uncased", None), ("org/model", "org/model"),
                                            (None, None)])
def test_hub_id(name, expected):
    assert hub_id(name) == expected


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("card")
    data = write_csv(root / "data.csv", sentiment_rows(60))
    test = write_csv(root / "test.csv", sentiment_rows(20, seed=1))
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        code = main(["search", data, "--model", tiny_model_dir, "--n-trials", "2", "--out", str(root / "run"),
                     "--test", test, "--no-progress", "--strategies", "linear_probe,full_finetune",
                     "--no-knowledge"])
    assert code == 0
    return root / "run"


def test_a_search_writes_a_card_with_its_leaderboard_and_test_score(searched):
    from autotl.api import load

    info = json.loads((searched / "best" / "autotl.json").read_text())
    card = ModelCard.load(searched / "best" / "README.md")
    tested = {r.metric_type: r.metric_value for r in card.data.eval_results if r.dataset_split == "test"}
    assert tested == {k: round(v, 4) for k, v in info["scores"]["test"]["metrics"].items()}
    assert "## What was searched" in card.text and f"| {info['trial']} | {info['strategy']} |" in card.text
    assert "README.md" not in info["files"]  # not in the manifest: rewriting it damages nothing
    load(searched)  # the checked model directory still loads after the card's rewrite


def test_a_card_that_cannot_be_written_costs_a_warning_not_the_model(monkeypatch, tmp_path, tiny_model,
                                                                    tiny_model_dir, caplog):
    from transformers import AutoTokenizer

    from autotl import model_card
    from autotl.export import save_best

    def broken(*_, **__):
        raise ValueError("no card today")

    monkeypatch.setattr(model_card, "card_text", broken)
    model, tokenizer = tiny_model(), AutoTokenizer.from_pretrained(tiny_model_dir)
    with caplog.at_level(logging.WARNING, logger="autotl"):
        saved = save_best(model, tokenizer, tmp_path, dict(INFO), max_length=32)
    assert (saved / "autotl.json").is_file() and not (saved / "README.md").exists()
    assert "model card (README.md) was not written: no card today" in caplog.text


def test_a_standard_head_cut_head_tail_is_not_offered_to_transformers_pipeline(tmp_path, tiny_model, tiny_model_dir):
    # A pipeline cuts long texts at their head; a model trained on head+tail cuts would see
    # other tokens there than it learned, so neither autotl.json nor the card may promise it.
    from autotl.backbone import load_tokenizer
    from autotl.export import save_best

    model, tokenizer = tiny_model("standard", labels=("a|b", "<c>")), load_tokenizer(tiny_model_dir)

    params = {"strategy": "full_finetune", "head.pooling": "standard", "text.truncation": "head_tail"}
    save_best(model, tokenizer, tmp_path, {**INFO, "params": params}, max_length=16)
    info = json.loads((tmp_path / "best" / "autotl.json").read_text())
    assert info["head"]["pooling"] == "standard" and info["head"]["pipeline_compatible"] is False
    assert "head+tail" in info["head"]["note"]
    card = (tmp_path / "best" / "README.md").read_text()
    assert "pipeline(" not in card and "cut head+tail" in card and "mean-pooled" not in card
    save_best(model, tokenizer, tmp_path, {**INFO, "params": {**params, "text.truncation": "head"}}, max_length=16)
    assert json.loads((tmp_path / "best" / "autotl.json").read_text())["head"]["pipeline_compatible"] is True
