"""Bad input is one `error:` line, never a traceback (issue 10), and RUN_DIR/best stays whole
when writers crash or race: readers only read, writers fsync, leftovers are cleaned, the final
phase writes only over the model it started from."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time

import numpy as np
import optuna  # noqa: F401  (imported here, its log handler binds the real stderr, not one test's capsys)
import pandas as pd
import pytest

import autotl
from autotl import csvread as data_module
from autotl.cli import main
from autotl.data import Task, load_data, read_texts
from autotl.errors import DataError, ModelError
from autotl.export import best_lock, clean_leftovers, find_best, save_best, swap_in, update_info
from autotl.testing import sentiment_rows

from conftest import fails, write_csv  # noqa: E402

STUDY = "autotl"
LABELS = ["negative", "positive"]
DATA = {"text_col": "text", "label_col": "label", "task": "classification", "label_names": LABELS}
REWRITE = "autotl search"  # every damaged-best/ message names the fix


def search_fails(capsys, tmp_path, data, model_dir, *extra) -> str:
    run = tmp_path / "run"
    line = fails(capsys, ["search", data, "--model", model_dir, "--out", run, "--no-progress", *extra])
    assert not (run / "best").exists()
    return line


def rows_csv(tmp_path, header: str, rows, name="data.csv"):
    path = tmp_path / name
    path.write_text(header + "\n" + "".join(f"{r}\n" for r in rows), encoding="utf-8")
    return path


def labelled(values, *, label="label"):
    return [f"row number {i},{v}" for i, v in enumerate(values)], f"text,{label}"


# -- A1: duplicate column names ------------------------------------------------------------------

@pytest.mark.parametrize("header, how", [("text,label, text", "' text' and 'text'"), ("text,label,text", "")],
                         ids=["space", "exact"])
def test_duplicate_csv_columns_are_one_error(tmp_path, header, how):
    # before: ' text' stripped to 'text' -> AttributeError traceback; 'text' twice -> pandas
    # silently renamed the second 'text.1'
    path = rows_csv(tmp_path, header, [f"words {i},{LABELS[i % 2]},more {i}" for i in range(10)])
    with pytest.raises(DataError) as info:
        load_data(path)
    msg = str(info.value)
    assert "has 2 columns named 'text'" in msg and "rename one" in msg and how in msg


def test_duplicate_dataframe_columns_are_one_error():
    frame = pd.DataFrame([[f"words {i}", LABELS[i % 2], "x"] for i in range(10)], columns=["text", "label", "text"])
    with pytest.raises(DataError, match=r"<DataFrame> has 2 columns named 'text'; .*rename one"):
        load_data(frame)
    with pytest.raises(DataError, match="columns named 'text'"):
        read_texts(frame)


def test_duplicate_columns_cli(capsys, no_training, tmp_path, tiny_model_dir):
    path = rows_csv(tmp_path, "text,label, text", [f"words {i},{LABELS[i % 2]},more" for i in range(10)])
    line = search_fails(capsys, tmp_path, path, tiny_model_dir)
    assert "2 columns named 'text'" in line


# -- A2: non-finite numeric labels --------------------------------------------------------------

def test_infinite_labels_are_refused_by_name(tmp_path):
    # before: 'inf' and friends made the float column a classification of 13 "classes"
    rows, header = labelled(["0.5", "1.5", "inf", "2.5", "-inf", "3.5", "4.5", "Infinity", "5.5", "6.5"], label="score")
    with pytest.raises(DataError) as info:
        load_data(rows_csv(tmp_path, header, rows))
    msg = str(info.value)
    assert "label column 'score'" in msg and "not finite numbers: 'inf', '-inf', 'Infinity' (3 rows)" in msg


def test_integer_labels_with_infinity_are_refused(tmp_path):
    rows, header = labelled(["0", "1"] * 4 + ["inf"])
    with pytest.raises(DataError, match="not finite numbers: 'inf'"):
        load_data(rows_csv(tmp_path, header, rows))


def test_nan_labels_are_missing(tmp_path, caplog):
    # Decision: 'nan' (how str() writes a missing float) is a missing label, as a blank cell
    # or a DataFrame NaN is: the row is an unlabeled row, never a training target.
    values = ["0.5", "nan", "1.5", "NaN", "2.5", "3.5", "4.5", "5.5", "6.5", "7.5"]
    rows, header = labelled(values, label="score")
    with caplog.at_level(logging.INFO, logger="autotl"):
        data = load_data(rows_csv(tmp_path, header, rows))
    assert data.task is Task.REGRESSION and data.dropped_rows == 0 and len(data.unlabeled) == 2
    targets = np.concatenate([data.train.targets, data.val.targets])
    assert np.isfinite(targets).all() and len(targets) == 8
    assert "2 unlabeled rows found" in caplog.text
    # integer classes: 'nan' is no third class
    rows, header = labelled(["0", "1"] * 5 + ["nan"])
    assert load_data(rows_csv(tmp_path, header, rows, name="ints.csv")).label_names == ("0", "1")


def test_labels_beyond_float32_are_refused(tmp_path):
    # before: '1e39' became inf in the float32 targets and reached training
    rows, header = labelled(["0.5", "1.5", "2.5", "1e39", "3.5", "4.5"])
    with pytest.raises(DataError, match=r"beyond the float32 range .*'1e39'"):
        load_data(rows_csv(tmp_path, header, rows))


def test_dataframe_infinity_is_refused_and_nan_dropped():
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(8)], "y": [0.5, 1.5, np.inf, 2.5, np.nan, 3.5, 4.5, 5.5]})
    with pytest.raises(DataError, match="label column 'y' in <DataFrame> has labels that are not finite"):
        load_data(frame)
    data = load_data(frame.drop(index=2))
    assert data.unlabeled == ("t4",) and np.isfinite(data.train.targets).all()


def test_val_file_infinity_is_named(tmp_path):
    rows, header = labelled([f"{i / 2}" for i in range(1, 9)])
    val = rows_csv(tmp_path, header, ["v1,0.5", "v2,-inf", "v3,nan"], name="val.csv")
    with pytest.raises(DataError, match=r"val\.csv has labels that are not finite numbers: '-inf'"):
        load_data(rows_csv(tmp_path, header, rows), val=val)


def test_huge_integer_label_is_one_error(tmp_path):
    # before: int() of a 5000-digit label raised ValueError (Python's digit cap)
    rows, header = labelled(["1", "2"] * 4 + ["9" * 5000])
    with pytest.raises(DataError) as info:
        load_data(rows_csv(tmp_path, header, rows))
    assert len(str(info.value)) < 400  # the value is shown cut short


def test_infinite_labels_cli(capsys, no_training, tmp_path, tiny_model_dir):
    rows, header = labelled([f"{i}.5" for i in range(10)] + ["inf"])
    line = search_fails(capsys, tmp_path, rows_csv(tmp_path, header, rows), tiny_model_dir)
    assert "not finite numbers: 'inf'" in line


# -- A3: numeric header names --------------------------------------------------------------------

@pytest.mark.parametrize("header", ["text,2020", "2020,label"])
def test_numeric_header_is_one_error_that_names_the_way_out(capsys, no_training, tmp_path, tiny_model_dir, header):
    # already one line before the fix (pinned); the way out is new
    path = rows_csv(tmp_path, header, [f"row {i},{'ab'[i % 2]}" for i in range(10)])
    line = search_fails(capsys, tmp_path, path, tiny_model_dir)
    assert "has no header" in line and "--text-col" in line and "--label-col" in line


def test_numeric_column_named_explicitly_is_a_header(tmp_path):
    # Decision: a first line with a numeric name is a header when the caller names a column of it.
    path = rows_csv(tmp_path, "text,2020", [f"row {i},{'ab'[i % 2]}" for i in range(10)])
    data = load_data(path, label_col="2020")
    assert (data.text_col, data.label_col, data.label_names) == ("text", "2020", ("a", "b"))
    other = rows_csv(tmp_path, "2020,label", [f"row {i},{'ab'[i % 2]}" for i in range(10)], name="other.csv")
    assert load_data(other, text_col="2020").text_col == "2020"
    assert read_texts(other, text_col="2020")[1][:2] == ["row 0", "row 1"]
    val = rows_csv(tmp_path, "text,2020", ["v,a", "w,b"], name="val.csv")  # the same header in --val
    assert load_data(path, label_col="2020", val=val).val.texts == ("v", "w")


def test_integer_dataframe_column_names():
    # before: label_col=1 was "column '1' not found (did you mean '1'?)"
    frame = pd.DataFrame({0: [f"t{i}" for i in range(8)], 1: [0, 1] * 4})
    assert load_data(frame, text_col=0, label_col=1).label_col == "1"


# -- A4: huge fields and files -------------------------------------------------------------------

def test_50mb_text_field_is_refused_by_row(tmp_path):
    # before: read fine, then the tokenizer (~100 bytes per character) needed ~5 GB
    path = tmp_path / "big.csv"
    with open(path, "w") as f:
        f.write("text,label\n" + "a,pos\nb,neg\n" * 3)
        f.write("x" * 50_000_000 + ",pos\nc,neg\n")
    for read in (load_data, read_texts):
        with pytest.raises(DataError) as info:
            read(path)
        msg = str(info.value)
        assert "row 7" in msg and "50,000,000-character 'text' field" in msg and "1,000,000" in msg


def test_huge_field_cli(capsys, no_training, monkeypatch, tmp_path, tiny_model_dir):
    monkeypatch.setattr(data_module, "MAX_FIELD_CHARS", 1000)  # the same rule, on a small file
    path = write_csv(tmp_path / "data.csv", sentiment_rows(20) + [("y" * 1001, "positive")])
    line = search_fails(capsys, tmp_path, path, tiny_model_dir)
    assert "row 21" in line and "1,001-character 'text' field" in line


def test_file_size_limit(monkeypatch, tmp_path):
    path = write_csv(tmp_path / "data.csv", sentiment_rows(20))
    monkeypatch.setattr(data_module, "MAX_FILE_BYTES", 100)
    with pytest.raises(DataError, match=r"data\.csv is .* bytes; autotl reads at most 100 bytes .*sample"):
        load_data(path)


def test_memory_error_while_reading_is_one_error(monkeypatch, tmp_path):
    def out_of_memory(*args, **kwargs):
        raise MemoryError

    path = write_csv(tmp_path / "data.csv", sentiment_rows(20))
    monkeypatch.setattr(pd, "read_csv", out_of_memory)
    with pytest.raises(DataError, match="does not fit in memory"):
        load_data(path)


# -- A5: a damaged best/ -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, tiny_model_dir):
    """A RUN_DIR whose best/ holds trial 0 of STUDY (the tiny BERT, mean head, untrained)."""
    from autotl.backbone import load_tokenizer
    from autotl.model import build_model

    run = tmp_path_factory.mktemp("saved") / "run"
    run.mkdir()
    model = build_model(tiny_model_dir, "mean", num_outputs=2, label_names=LABELS, regression=False)
    info = {"data": DATA, "trial": 0, "study": STUDY, "scores": {"val": 0.5, "test": None}}
    save_best(model, load_tokenizer(tiny_model_dir), run, info, max_length=32)
    return run


@pytest.fixture
def run(saved_run, tmp_path):
    """A fresh copy of `saved_run` to damage."""
    return shutil.copytree(saved_run, tmp_path / "run")


def damage_info(best, content):
    (best / "autotl.json").write_text(content)


def drop_manifest(best):  # a run saved before autotl.json recorded its files
    info = json.loads((best / "autotl.json").read_text())
    del info["files"]
    (best / "autotl.json").write_text(json.dumps(info))


def truncate(path):
    path.write_bytes(path.read_bytes()[:100])


DAMAGE = [  # (case, damage to best/, words in the error)
    ("empty autotl.json", lambda b: damage_info(b, ""), ["autotl.json is empty"]),
    ("corrupt autotl.json", lambda b: damage_info(b, '{"trial": 0, "head":'), ["autotl.json is corrupt"]),
    ("autotl.json not an object", lambda b: damage_info(b, "[]"), ["autotl.json lacks"]),
    ("autotl.json without head", lambda b: damage_info(b, '{"trial": 0}'), ["autotl.json lacks"]),
    ("no autotl.json", lambda b: (b / "autotl.json").unlink(), ["has no autotl.json", "incomplete"]),
    ("no weights", lambda b: (b / "model.safetensors").unlink(), ["missing model.safetensors"]),
    ("truncated weights", lambda b: truncate(b / "model.safetensors"), ["model.safetensors is damaged"]),
    ("no head weights", lambda b: (b / "autotl_head.safetensors").unlink(), ["missing autotl_head.safetensors"]),
    ("no tokenizer", lambda b: (b / "tokenizer.json").unlink(), ["missing tokenizer.json"]),
    ("no tokenizer config", lambda b: (b / "tokenizer_config.json").unlink(), ["missing tokenizer_config.json"]),
    ("old run, no weights", lambda b: (drop_manifest(b), (b / "model.safetensors").unlink()),
     ["has no model weights"]),
    ("old run, no tokenizer config", lambda b: (drop_manifest(b), (b / "tokenizer_config.json").unlink()),
     ["missing tokenizer_config.json"]),
]


@pytest.mark.parametrize("damage, words", [c[1:] for c in DAMAGE], ids=[c[0] for c in DAMAGE])
def test_damaged_best_is_one_model_error(capsys, run, tmp_path, tiny_test_csv, damage, words):
    # before: JSONDecodeError, KeyError, OSError or SafetensorError tracebacks; a missing
    # tokenizer file loaded silently; "no autotl.json" was one line already, without the fix
    damage(run / "best")
    with pytest.raises(ModelError) as info:
        autotl.load(run)
    for word in words + [REWRITE]:
        assert word in str(info.value), str(info.value)
    preds = tmp_path / "preds.csv"
    preds.write_text("kept\n")
    line = fails(capsys, ["predict", run, tiny_test_csv, "-o", preds])
    assert all(word in line for word in words + [REWRITE]), line
    assert preds.read_text() == "kept\n"  # nothing overwritten


def test_the_fix_the_message_names_works(capsys, tmp_path, tiny_model_dir, tiny_csv, tiny_test_csv):
    # before: the search saw best/autotl.json name its trial and left the damaged best/ as it was
    run = tmp_path / "run"
    argv = ["search", tiny_csv, "--model", tiny_model_dir, "--n-trials", "1", "--strategies", "linear_probe",
            "--out", run, "--no-progress"]
    assert main([str(a) for a in argv]) == 0
    (run / "best" / "model.safetensors").unlink()
    assert "missing model.safetensors" in fails(capsys, ["predict", run, tiny_test_csv])
    assert main([str(a) for a in argv]) == 0  # "running the same `autotl search` command again"
    capsys.readouterr()
    assert main(["predict", str(run), tiny_test_csv]) == 0


def test_intact_best_loads(run, tiny_test_csv):
    model, _, info = autotl.load(run)
    assert info["trial"] == 0 and "model.safetensors" in info["files"]
    assert len(autotl.predict(run, tiny_test_csv, device="cpu")) == 20


# -- B1: readers never rename or delete ----------------------------------------------------------

def test_reader_reads_best_old_in_place(run, tiny_test_csv, monkeypatch):
    # A writer crashed (or is) between its two renames: only best.old exists.
    os.replace(run / "best", run / "best.old")
    with monkeypatch.context() as patch:
        for module, name in ((os, "replace"), (os, "rename"), (shutil, "rmtree")):
            patch.setattr(module, name, lambda *a, **k: pytest.fail(f"a reader renamed or deleted {a}"))
        assert find_best(run) == run / "best.old"
        assert autotl.load(run)[2]["trial"] == 0
        assert len(autotl.predict(run, tiny_test_csv, device="cpu")) == 20
    assert (run / "best.old").is_dir() and not (run / "best").exists()


def test_reader_leaves_a_stale_best_old(run, capsys, tiny_test_csv):
    shutil.copytree(run / "best", run / "best.old")  # a writer crashed before deleting it
    assert main(["predict", str(run), tiny_test_csv]) == 0
    capsys.readouterr()
    assert (run / "best.old").is_dir() and (run / "best").is_dir()


def test_writers_restore(run):
    os.replace(run / "best", run / "best.old")
    assert update_info(run, 0, STUDY, {"note": "x"})  # a writer: restores under the lock, then writes
    assert (run / "best").is_dir() and not (run / "best.old").exists()


# -- B2: fsync before the rename, and of RUN_DIR after it ----------------------------------------

def test_save_best_fsyncs_files_then_renames_then_fsyncs_run_dir(saved_run, tmp_path, tiny_model_dir, monkeypatch):
    from autotl.backbone import load_tokenizer
    from autotl.model import build_model

    run = shutil.copytree(saved_run, tmp_path / "run")
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    model = build_model(tiny_model_dir, "standard", num_outputs=2, label_names=LABELS, regression=False)
    save_best(model, load_tokenizer(tiny_model_dir), run, {"data": DATA, "trial": 1, "study": STUDY}, max_length=32)
    into_best = next(i for i, e in enumerate(events) if e[0] == "rename" and e[2] == str(run / "best"))
    tmp = events[into_best][1]
    synced = {e[1] for e in events[:into_best] if e[0] == "fsync"}
    for name in os.listdir(run / "best"):
        assert os.path.join(tmp, name) in synced, name
    assert tmp in synced  # the directory itself: its entries
    assert ("fsync", str(run)) in events[into_best:]  # the renames
    assert json.loads((run / "best" / "autotl.json").read_text())["trial"] == 1


def test_failed_write_leaves_no_temporary_directory(run, monkeypatch, tiny_model):
    import autotl.export

    def disk_full(model, tokenizer, path, **kwargs):
        path.mkdir()
        (path / "config.json").write_text("{}")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(autotl.export, "write_model", disk_full)
    with pytest.raises(OSError):
        save_best(tiny_model(), None, run, {"trial": 5}, max_length=32)
    assert not list(run.glob(".best-tmp-*"))
    assert json.loads((run / "best" / "autotl.json").read_text())["trial"] == 0


# -- B3: leftovers of crashed writers ------------------------------------------------------------

def age(path, seconds):
    past = time.time() - seconds
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.utime(os.path.join(root, name), (past, past))
    os.utime(path, (past, past))


def test_clean_leftovers_removes_only_old_temporary_directories(run):
    old = [run / ".best-tmp-123", run / ".export-abc", run / ".ensemble-tmp-9"]
    for folder in old:
        shutil.copytree(run / "best", folder)
        age(folder, 3600)
    live = run / ".best-tmp-456"  # a writer busy right now
    shutil.copytree(run / "best", live)
    writing = run / ".export-def"  # made long ago, but a file in it is being written (a slow download)
    shutil.copytree(run / "best", writing)
    (writing / "model.tar").write_bytes(b"partial")
    age(writing, 3600)
    with open(writing / "model.tar", "ab") as tar:  # changes the file's mtime, not the directory's
        tar.write(b" more")
    keep = [run / "best", run / "candidates", run / ".best-tmp-note.txt"]
    (run / "candidates").mkdir()
    (run / ".best-tmp-note.txt").write_text("a file, not a writer's directory")
    age(run / "best", 3600)
    assert sorted(clean_leftovers(run)) == sorted(old)
    for path in [live, writing, *keep]:
        assert path.exists(), path
    assert clean_leftovers(run / "nonexistent") == []


# -- B4: the final phase writes only over the model it started from -------------------------------

def other_trial(run, tmp_path, trial=7):
    """A complete model directory holding `trial` (best/'s files, another autotl.json)."""
    folder = shutil.copytree(run / "best", tmp_path / f"trial-{trial}")
    info = json.loads((folder / "autotl.json").read_text())
    (folder / "autotl.json").write_text(json.dumps({**info, "trial": trial}))
    return folder


def test_update_info_merges_when_best_holds_the_trial(run):
    test_scores = {"rows": 20, "metrics": {"accuracy": 0.75}}
    assert update_info(run, 0, STUDY, {"scores": {"test": test_scores}, "note": "final"})
    info = json.loads((run / "best" / "autotl.json").read_text())
    assert info["scores"] == {"val": 0.5, "test": test_scores} and info["note"] == "final"
    assert not [p for p in (run / "best").iterdir() if ".tmp" in p.name]
    assert autotl.load(run)[2]["note"] == "final"


def test_update_info_refuses_another_trial_or_study(run, tmp_path):
    before = (run / "best" / "autotl.json").read_text()
    assert not update_info(run, 0, "another-study", {"note": "x"})
    with best_lock(run):
        swap_in(run, other_trial(run, tmp_path))
    after_swap = (run / "best" / "autotl.json").read_text()
    assert after_swap != before
    assert not update_info(run, 0, STUDY, {"note": "x"})
    assert (run / "best" / "autotl.json").read_text() == after_swap


def test_update_info_waits_for_a_concurrent_swap_and_then_refuses(run, tmp_path):
    folder = other_trial(run, tmp_path)
    locked, results = threading.Event(), []
    release = threading.Event()

    def writer():  # another process's swap, holding the lock
        with best_lock(run):
            locked.set()
            release.wait(10)
            swap_in(run, folder)

    swapper = threading.Thread(target=writer)
    swapper.start()
    assert locked.wait(10)
    updater = threading.Thread(target=lambda: results.append(update_info(run, 0, STUDY, {"note": "x"})))
    updater.start()
    time.sleep(0.3)
    assert results == []  # waiting on the lock, not reading the trial it is about to lose
    release.set()
    swapper.join(10)
    updater.join(10)
    assert results == [False]
    assert json.loads((run / "best" / "autotl.json").read_text())["trial"] == 7
