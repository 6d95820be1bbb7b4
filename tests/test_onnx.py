"""ONNX: `autotl export RUN_DIR --onnx` for both heads (and regression), onnxruntime against
PyTorch on padded batches, `autotl predict --onnx` against the PyTorch predict, the errors."""

from __future__ import annotations

import io
import json
import shutil
import sys
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pandas as pd
import pytest
import torch

import autotl
from autotl.batching import collate, encode
from autotl.cli import main
from autotl.export import save_best
from autotl.onnx_export import FILE, OPSET, load_onnx
from autotl.testing import sentiment_rows
from autotl.workers import STORAGE_ENV

from conftest import fails, write_csv  # noqa: E402

TOLERANCE = 1e-4  # the bound on |onnxruntime - PyTorch| logits
LABELS = ("negative", "positive")


def cli(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def varied_texts(n: int = 24) -> list[str]:
    """Rows of 1 to 8 words: every batch of them is padded."""
    texts = []
    for i, (text, _) in enumerate(sentiment_rows(n, seed=2)):
        words = text.split()
        texts.append(" ".join((words * 2)[: 1 + i % 8]))
    return texts


def saved_model(folder, tiny_model_dir, *, pooling: str = "mean", regression: bool = False, trial: int = 0):
    """A model with weights moved off their fresh init, saved as folder/best. (A search on the
    tiny BERT leaves a standard head's logits nearly equal on every row: a weak comparison.)"""
    from autotl.backbone import load_tokenizer
    from autotl.model import build_model

    torch.manual_seed(trial)
    model = build_model(tiny_model_dir, pooling, num_outputs=1 if regression else 2,
                        label_names=() if regression else LABELS, regression=regression, target_mean=2.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # "trained": outputs differ clearly from row to row
    task = "regression" if regression else "classification"
    info = {"trial": trial, "study": "test", "data": {"text_col": "text", "task": task,
                                                      "label_names": None if regression else list(LABELS)}}
    folder.mkdir(parents=True, exist_ok=True)
    save_best(model.eval(), load_tokenizer(tiny_model_dir), folder, info, max_length=32)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    """Run directories with model.onnx exported by the CLI: a real `--standard-head` search,
    and saved directly, a standard and a mean-pooled classifier and a mean-pooled regressor."""
    root = tmp_path_factory.mktemp("onnx")
    data = write_csv(root / "data.csv", sentiment_rows(60))
    searched = root / "searched"
    code, out, err = cli(["search", data, "--model", tiny_model_dir, "--n-trials", "2", "--out", searched,
                          "--strategies", "linear_probe,full_finetune", "--standard-head", "--no-progress",
                          "--no-knowledge", "--no-soup", "--rescore", "0", "--device", "cpu"])
    assert code == 0, out + err
    assert json.loads((searched / "best" / "autotl.json").read_text())["head"]["pooling"] == "standard"
    runs = {"searched": searched, "standard": saved_model(root / "standard", tiny_model_dir, pooling="standard"),
            "mean": saved_model(root / "mean", tiny_model_dir),
            "regression": saved_model(root / "regression", tiny_model_dir, regression=True)}
    for name, run in runs.items():
        target = run / "best" if name == "regression" else run  # RUN_DIR/best itself works too
        code, out, err = cli(["export", target, "--onnx"])
        assert code == 0, out + err
        assert out.startswith(f"wrote {run / 'best' / FILE} (ONNX opset {OPSET}; inputs input_ids, attention_mask, "
                              "token_type_ids; output logits; onnxruntime within "), out
    return runs


@pytest.fixture
def varied_csv(tmp_path):
    return write_csv(tmp_path / "varied.csv", [(t,) for t in varied_texts()], header=("text",))


@pytest.mark.parametrize("case", ["standard", "mean", "regression"])
def test_onnxruntime_logits_equal_pytorch_on_padded_rows(runs, case):
    run = runs[case]
    model, tokenizer, info = autotl.load(run)
    assert info["head"]["pooling"] == ("standard" if case == "standard" else "mean")
    served, _, _ = load_onnx(run)
    encoded = encode(tokenizer, varied_texts(), np.zeros(24), info["max_length"], key="t")
    assert len(set(encoded.lengths.tolist())) >= 6
    ids, mask = collate(encoded, np.arange(len(encoded)), tokenizer.pad_token_id)  # one batch: shorter rows padded
    assert (mask == 0).any(dim=1).sum() >= 20
    with torch.no_grad():
        expected = model(ids, mask)
    got = served(ids, mask)
    assert got.shape == expected.shape == (24, 1 if case == "regression" else 2)
    assert expected.std(dim=0).max() > 1e-3  # rows differ: the comparison below means something
    assert (got - expected).abs().max().item() <= TOLERANCE
    # Another batch size and width than the first call: the axes are dynamic.
    with torch.no_grad():
        assert (served(ids[:5, :4], mask[:5, :4]) - model(ids[:5, :4], mask[:5, :4])).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("case", ["searched", "mean"])
def test_the_graph_takes_the_tokenizers_output_as_it_is(runs, case):
    import onnx
    import onnxruntime

    run = runs[case]
    model, tokenizer, info = autotl.load(run)
    graph = onnx.load(str(run / "best" / FILE))
    assert {o.domain: o.version for o in graph.opset_import}[""] == OPSET
    session = onnxruntime.InferenceSession(str(run / "best" / FILE), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    for each in session.get_inputs():
        assert all(isinstance(dim, str) for dim in each.shape), each.shape  # symbolic: batch, sequence
    (logits,) = session.get_outputs()
    assert logits.name == "logits" and isinstance(logits.shape[0], str) and logits.shape[1] == 2
    feed = dict(tokenizer(varied_texts()[:7], padding=True, return_tensors="np"))
    with torch.no_grad():
        expected = model(torch.from_numpy(feed["input_ids"]), torch.from_numpy(feed["attention_mask"])).numpy()
    assert np.abs(session.run(["logits"], feed)[0] - expected).max() <= TOLERANCE
    served, _, _ = load_onnx(run)
    assert served.metadata["label_names"] == info["data"]["label_names"] == list(LABELS)
    assert served.metadata["pooling"] == info["head"]["pooling"]


@pytest.mark.parametrize("case", ["searched", "standard", "mean", "regression"])
def test_predict_onnx_writes_what_the_pytorch_predict_writes(runs, case, varied_csv, tmp_path):
    run = runs[case]
    written = {}
    for name, extra in (("torch", []), ("onnx", ["--onnx"])):
        code, out, err = cli(["predict", run, varied_csv, "-o", tmp_path / f"{name}.csv", *extra])
        assert code == 0, out + err
        written[name] = pd.read_csv(tmp_path / f"{name}.csv")
    ours, theirs = written["torch"], written["onnx"]
    assert list(theirs.columns) == list(ours.columns)
    assert theirs["text"].tolist() == ours["text"].tolist() == varied_texts()
    if case == "regression":
        assert list(ours.columns) == ["text", "prediction"]
        assert ours["prediction"].std() > 1e-3
        assert np.abs(theirs["prediction"] - ours["prediction"]).max() <= TOLERANCE
        return
    assert list(ours.columns) == ["text", "prediction", "prob_negative", "prob_positive"]
    assert theirs["prediction"].tolist() == ours["prediction"].tolist()
    probs = ["prob_negative", "prob_positive"]
    assert np.abs(theirs[probs].to_numpy() - ours[probs].to_numpy()).max() <= TOLERANCE


def test_the_study_form_still_exports_and_with_onnx_writes_model_onnx_too(runs, tmp_path, monkeypatch):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    journal = runs["searched"] / "study.journal"
    code, out, err = cli(["export", "--storage", journal, "--out", tmp_path / "plain"])
    assert code == 0, out + err
    assert (tmp_path / "plain" / "best" / "autotl.json").is_file()
    assert not (tmp_path / "plain" / "best" / FILE).exists()  # only with --onnx
    code, out, err = cli(["export", "--storage", journal, "--out", tmp_path / "both", "--onnx"])
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0].startswith("wrote trial ") and lines[0].endswith(f"to {tmp_path / 'both'}/best")
    assert lines[1].startswith(f"wrote {tmp_path / 'both' / 'best' / FILE} ")
    served, _, info = load_onnx(tmp_path / "both")
    assert served.metadata["trial"] == info["trial"]
    monkeypatch.setenv(STORAGE_ENV, str(journal))  # the old form with the URL kept out of argv
    code, out, err = cli(["export", "--out", tmp_path / "env"])
    assert code == 0, out + err
    assert (tmp_path / "env" / "best" / "autotl.json").is_file()


# -- errors: exit 2, one line, the fix named ------------------------------------------------------

def test_export_without_a_run_dir_or_a_storage(capsys, monkeypatch):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    line = fails(capsys, ["export"])
    assert line.startswith("error: nothing to export; pass RUN_DIR --onnx") and "--storage URL --out DIR" in line


def test_export_of_a_run_dir_needs_onnx(capsys, tmp_path, tiny_model_dir):
    run = saved_model(tmp_path / "run", tiny_model_dir)
    line = fails(capsys, ["export", run])
    assert f"`autotl export {run}` writes only model.onnx: add --onnx" in line


def test_export_with_two_output_directories(capsys, runs, tmp_path):
    line = fails(capsys, ["export", tmp_path / "a", "--storage", runs["searched"] / "study.journal",
                          "--out", tmp_path / "b"])
    assert "two output directories given" in line


def test_export_without_the_onnx_packages_names_the_install(capsys, monkeypatch, tmp_path, tiny_model_dir):
    run = saved_model(tmp_path / "run", tiny_model_dir)
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed: find_spec and import fail
    line = fails(capsys, ["export", run, "--onnx"])
    assert line == 'error: ONNX export needs onnxscript, not installed; install with: pip install "autotl[onnx]"'
    assert not (run / "best" / FILE).exists()


def test_predict_onnx_without_onnxruntime_names_the_install(capsys, monkeypatch, runs, varied_csv):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    line = fails(capsys, ["predict", runs["mean"], varied_csv, "--onnx"])
    assert line == 'error: --onnx needs onnxruntime, not installed; install with: pip install "autotl[onnx]"'


def test_predict_onnx_without_model_onnx_says_to_export(capsys, tmp_path, tiny_model_dir, varied_csv):
    run = saved_model(tmp_path / "run", tiny_model_dir)
    line = fails(capsys, ["predict", run, varied_csv, "--onnx"])
    assert line == f"error: {run / 'best'} has no {FILE}; write it with `autotl export {run} --onnx`"


def test_predict_onnx_refuses_a_model_onnx_of_another_model(capsys, tmp_path, tiny_model_dir, runs, varied_csv):
    run = saved_model(tmp_path / "run", tiny_model_dir, trial=7)
    shutil.copy(runs["mean"] / "best" / FILE, run / "best" / FILE)
    line = fails(capsys, ["predict", run, varied_csv, "--onnx"])
    assert "was exported from another model" in line and f"`autotl export {run} --onnx`" in line


def test_predict_onnx_runs_on_the_cpu_only(capsys, runs, varied_csv):
    line = fails(capsys, ["predict", runs["mean"], varied_csv, "--onnx", "--device", "cuda"])
    assert "--onnx runs on the CPU" in line and "--device cpu" in line
