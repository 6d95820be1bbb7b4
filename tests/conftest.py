"""Fixtures: a tiny BERT built from a config (no downloads) and tiny CSVs in tmp_path."""

from __future__ import annotations

import csv

import pytest

from autotl.testing import make_tiny_backbone, sentiment_rows

BUILTINS = {  # autotl's own strategies -> the entry point (plugin) that provides each
    "full_finetune": "autotl.finetune", "freeze": "autotl.finetune", "surgical": "autotl.finetune",
    "bitfit": "autotl.finetune", "reinit_top": "autotl.finetune",
    "linear_probe": "autotl.probe", "lp_ft": "autotl.probe",
    "l2sp": "autotl.regularize", "l1": "autotl.regularize", "l2": "autotl.regularize",
    "bss": "autotl.regularize", "delta": "autotl.regularize",
    "llrd": "autotl.schedule", "gradual_unfreeze": "autotl.schedule",
    "wise_ft": "autotl.interpolate", "baseline": "autotl.baseline",
}


@pytest.fixture(autouse=True)
def own_knowledge_base(tmp_path_factory, monkeypatch):
    """Each test its own autotl cache (knowledge base, unpacked backbones) and no shipped
    knowledge records: a search never learns from another test's, nor from the user's."""
    monkeypatch.setenv("AUTOTL_CACHE", str(tmp_path_factory.mktemp("autotl-cache")))
    monkeypatch.setenv("AUTOTL_STARTER_KNOWLEDGE", "0")
    monkeypatch.delenv("AUTOTL_KNOWLEDGE", raising=False)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer, 32-wide BERT and its WordPiece tokenizer, saved as an HF directory."""
    return make_tiny_backbone(tmp_path_factory.mktemp("tiny-bert"))


def write_csv(path, rows, header=("text", "label")) -> str:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


@pytest.fixture
def tiny_csv(tmp_path):
    """A 60-row binary sentiment CSV."""
    return write_csv(tmp_path / "data.csv", sentiment_rows(60))


@pytest.fixture
def tiny_test_csv(tmp_path):
    return write_csv(tmp_path / "test.csv", sentiment_rows(20, seed=1))


@pytest.fixture
def tiny_model(tiny_model_dir):
    """Factory: a fresh TransferModel on the tiny BERT."""
    from autotl.model import build_model

    def make(pooling="mean", labels=("negative", "positive")):
        return build_model(tiny_model_dir, pooling, num_outputs=len(labels), label_names=labels,
                           regression=False)

    return make


@pytest.fixture
def fake_plugin(tmp_path, monkeypatch):
    """Factory: install a plugin module as a fake distribution with an ``autotl`` entry point.

    Writes ``<name>.py`` and ``<name>-0.1.dist-info`` into a folder put on sys.path (and
    returned, for PYTHONPATH in subprocesses): importlib.metadata discovers it like a
    pip-installed package, so the test goes through real entry-point loading.
    """
    import importlib
    import sys

    root = tmp_path / "site"
    root.mkdir(exist_ok=True)

    def install(name: str, source: str) -> str:
        (root / f"{name}.py").write_text(source)
        info = root / f"{name}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[autotl]\n{name} = {name}\n")
        monkeypatch.syspath_prepend(str(root))
        importlib.invalidate_caches()
        monkeypatch.delitem(sys.modules, name, raising=False)
        return str(root)

    return install


@pytest.fixture
def no_training(monkeypatch):
    """Any bad-input case must fail before the study (and so any training) starts."""
    import autotl.runner
    import autotl.train

    def forbidden(*args, **kwargs):
        raise AssertionError("training started before the bad input was reported")

    monkeypatch.setattr(autotl.runner, "run_study", forbidden)
    monkeypatch.setattr(autotl.train, "fit", forbidden)


def fails(capsys, argv) -> str:
    """Run the CLI, check the one-line error contract, return the error line."""
    from autotl.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    assert "Traceback" not in err, err
    assert not any(line.startswith("error") for line in out.splitlines()), out
    return errors[0]


def search_fails_with(capsys, tmp_path, model_dir, case) -> str:
    """`case` is (make, message): make(tmp_path) writes the bad data and returns [data,
    *flags]; `autotl search` on it must fail with one error line matching `message`."""
    import re

    make, message = case
    data, *flags = make(tmp_path)
    line = fails(capsys, ["search", data, "--model", model_dir, "--out", tmp_path / "run", "--no-progress", *flags])
    assert re.search(message, line), line
    return line
