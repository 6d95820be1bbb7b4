"""Tests for autotl.data: reading, inference, splits and every bad-input message."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autotl.data import Task, load_data, read_texts
from autotl.errors import DataError, UsageError


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def csv(tmp_path, rows, header="text,label", name="data.csv"):
    return write(tmp_path, name, header + "\n" + "".join(f"{r}\n" for r in rows))


def balanced(n_per_class=5, classes=("neg", "pos")):
    return [f"some words number {i} for {c},{c}" for c in classes for i in range(n_per_class)]


# -- column and task inference -----------------------------------------------------------

def test_infers_columns_by_name_and_string_classes(tmp_path, caplog):
    path = csv(tmp_path, [f"{lab},{i},review number {i}" for i, lab in enumerate(["b", "a"] * 5)],
               header="Sentiment,id,Review")
    with caplog.at_level(logging.INFO, logger="autotl"):
        data = load_data(path)
    assert (data.text_col, data.label_col) == ("Review", "Sentiment")
    assert data.task is Task.CLASSIFICATION
    assert data.label_names == ("a", "b")
    assert data.num_outputs == 2
    assert data.source == str(path)
    assert data.train.targets.dtype == np.int64
    assert len(data.train.texts) + len(data.val.texts) == 10
    assert "text column 'Review' (inferred), label column 'Sentiment' (inferred)" in caplog.text
    assert "classification, 2 classes: a, b" in caplog.text


def test_infers_columns_by_heuristics(tmp_path):
    # no known names: the longest non-numeric strings are the text (a long numeric id is
    # not), the fewest distinct values the label
    rows = [f"{10**40 + i},{'yes' if i % 2 else 'no'},a longer sentence {i}" for i in range(10)]
    data = load_data(csv(tmp_path, rows, header="code,flag,words"))
    assert (data.text_col, data.label_col) == ("words", "flag")
    assert data.label_names == ("no", "yes")


def test_explicit_columns(tmp_path, caplog):
    rows = [f"{'long text ' * 3}{i},short{i % 2},{i % 2}" for i in range(10)]
    with caplog.at_level(logging.INFO, logger="autotl"):
        data = load_data(csv(tmp_path, rows, header="a,b,c"), text_col="b", label_col="c")
    assert (data.text_col, data.label_col) == ("b", "c")
    assert set(data.train.texts) | set(data.val.texts) == {"short0", "short1"}
    assert "text column 'b', label column 'c';" in caplog.text


def test_integer_labels_sort_numerically(tmp_path):
    rows = [f"text {i} {lab},{lab}" for lab in ("10", "2", "1", "007") for i in range(3)]
    data = load_data(csv(tmp_path, rows))
    assert data.task is Task.CLASSIFICATION
    assert data.label_names == ("1", "2", "7", "10")
    texts = data.train.texts + data.val.texts
    targets = np.concatenate([data.train.targets, data.val.targets])
    for text, target in zip(texts, targets):  # rows stay aligned with their labels
        assert str(int(text.split()[-1])) == data.label_names[target]


def test_float_labels_are_regression(tmp_path, caplog):
    rows = [f"text {i},{v}" for i, v in enumerate(["0.5", "1", "2.25", "3.0", "4", "-1.5"])]
    with caplog.at_level(logging.INFO, logger="autotl"):
        data = load_data(csv(tmp_path, rows))
    assert data.task is Task.REGRESSION
    assert data.label_names == ()
    assert data.num_outputs == 1
    assert data.train.targets.dtype == np.float32
    values = dict(zip(data.train.texts + data.val.texts,
                      np.concatenate([data.train.targets, data.val.targets]).tolist()))
    assert values == {"text 0": 0.5, "text 1": 1.0, "text 2": 2.25, "text 3": 3.0,
                      "text 4": 4.0, "text 5": -1.5}
    assert (len(data.train.texts), len(data.val.texts)) == (5, 1)
    assert "regression, values -1.5 to" in caplog.text


def test_dataframe_input_and_schema(tmp_path):
    frame = pd.DataFrame({"sentence": [f"s{i}" for i in range(10)], "y": [0, 1] * 5})
    blanks = pd.DataFrame({"sentence": ["  ", None, "s"], "y": [1, 0, None]})
    data = load_data(pd.concat([frame, blanks]), test=frame.iloc[:4])
    assert data.dropped_rows == 2 and data.unlabeled == ("s",)  # a text without a label is an unlabeled row
    assert (data.source, data.text_col, data.label_col) == ("<DataFrame>", "sentence", "y")
    assert data.label_names == ("0", "1")
    assert data.test.texts == ("s0", "s1", "s2", "s3")
    assert data.test.targets.tolist() == [0, 1, 0, 1]
    schema = data.schema()
    assert schema == {"text_col": "sentence", "label_col": "y", "task": "classification",
                      "label_names": ["0", "1"], "num_train": 8, "num_val": 2, "num_test": 4,
                      "source": "<DataFrame>", "fingerprint": data.fingerprint}
    assert load_data(frame).schema()["num_test"] is None


def test_utf8_bom_and_latin1_encoding(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\n" + b"caf\xc3\xa9 ok,a\nx,b\n" * 3)
    data = load_data(path)
    assert data.text_col == "text"
    assert "café ok" in data.train.texts + data.val.texts


# -- splits --------------------------------------------------------------------------------

def test_stratified_split_sizes_and_classes(tmp_path):
    rows = balanced(10, ("a",)) + balanced(5, ("b",)) + balanced(2, ("c",))
    data = load_data(csv(tmp_path, rows), val_frac=0.3)
    val_counts = np.bincount(data.val.targets, minlength=3).tolist()
    train_counts = np.bincount(data.train.targets, minlength=3).tolist()
    assert val_counts == [3, 2, 1]  # round(10*.3), round(5*.3), round(2*.3) raised to 1
    assert train_counts == [7, 3, 1]
    assert not set(data.train.texts) & set(data.val.texts)


def test_split_is_deterministic_per_seed(tmp_path):
    path = csv(tmp_path, balanced(20))
    first, again, other = load_data(path, seed=1), load_data(path, seed=1), load_data(path, seed=2)
    assert first.val.texts == again.val.texts
    assert first.fingerprint == again.fingerprint
    assert first.val.texts != other.val.texts
    assert first.fingerprint != other.fingerprint


def test_fingerprint_changes_with_content(tmp_path):
    rows = balanced(5)
    base = load_data(csv(tmp_path, rows, name="a.csv")).fingerprint
    rows[0] = rows[0].replace("some", "other")
    assert load_data(csv(tmp_path, rows, name="b.csv")).fingerprint != base
    assert len(base) == 64


def test_rows_without_text_are_dropped_with_one_warning(tmp_path, caplog):
    rows = balanced(5) + [",neg", "   ,pos", "text without label,", "text,  "]
    with caplog.at_level(logging.WARNING, logger="autotl"):
        data = load_data(csv(tmp_path, rows))
    assert data.dropped_rows == 2
    assert data.unlabeled == ("text without label", "text")  # kept as unlabeled rows (test_unlabeled.py)
    assert len(data.train.texts) + len(data.val.texts) == 10
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"{tmp_path / 'data.csv'}: dropped 2 of 14 rows with missing text"]


def test_val_and_test_files(tmp_path):
    train = csv(tmp_path, balanced(3))
    val = csv(tmp_path, ["v1,pos", "v2,neg", ",pos"], name="val.csv")
    test = csv(tmp_path, ["t1,neg"], name="test.csv")
    data = load_data(train, val=val, test=test)
    assert len(data.train.texts) == 6
    assert data.val.texts == ("v1", "v2")
    assert data.val.targets.tolist() == [1, 0]
    assert data.test.targets.tolist() == [0]
    assert data.dropped_rows == 1


# -- bad input -----------------------------------------------------------------------------

def error_of(exc, *args, **kwargs):
    with pytest.raises(exc) as info:
        load_data(*args, **kwargs)
    return str(info.value)


def test_missing_file(tmp_path):
    msg = error_of(DataError, tmp_path / "nope.csv")
    assert "nope.csv not found" in msg


def test_directory(tmp_path):
    assert "is a directory" in error_of(DataError, tmp_path)


def test_unreadable_file(tmp_path, monkeypatch):
    def denied(self):  # chmod 0 does not stop root, so fake what open() raises
        raise PermissionError(13, "Permission denied", str(self))

    path = csv(tmp_path, balanced())
    monkeypatch.setattr(Path, "read_bytes", denied)
    msg = error_of(DataError, path)
    assert "cannot read" in msg and "data.csv" in msg and "permission" in msg.lower()


@pytest.mark.parametrize("content", ["", "  \n\n \t\n"])
def test_empty_file(tmp_path, content):
    msg = error_of(DataError, write(tmp_path, "data.csv", content))
    assert "data.csv is empty" in msg


def test_header_only(tmp_path):
    msg = error_of(DataError, write(tmp_path, "data.csv", "text,label\n"))
    assert "data.csv has a header (text, label) but no data rows" in msg


def test_no_header(tmp_path):
    msg = error_of(DataError, write(tmp_path, "data.csv", "good film,1\nbad film,0\n"))
    assert "data.csv has no header" in msg and "text,label" in msg


def test_binary_file(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    msg = error_of(DataError, path)
    assert "data.csv is not a CSV" in msg


def test_parse_error_names_line(tmp_path):
    msg = error_of(DataError, write(tmp_path, "data.csv", 'text,label\na,b\n"unclosed,c\n'))
    assert "data.csv is not a valid CSV" in msg
    msg = error_of(DataError, write(tmp_path, "data.csv", "text,label\na,b\nc,d\ne,f,g,h\n"))
    assert "not a valid CSV" in msg and "line 4" in msg


def test_single_column(tmp_path):
    msg = error_of(DataError, write(tmp_path, "data.csv", "text\nhello\nworld\n"))
    assert "data.csv has 1 column ('text')" in msg
    assert "a text column and a label column are needed" in msg
    msg = error_of(DataError, write(tmp_path, "data.csv", "text\tlabel\nhello\ta\n"))
    assert "delimiter" in msg


def test_not_utf8_names_byte_and_line(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"text,label\nfine,a\ncaf\xe9,b\nx,a\ny,b\nz,a\nw,b\n")
    msg = error_of(DataError, path)
    assert msg.endswith("data.csv is not UTF-8: invalid byte 0xe9 at line 3; "
                        "re-save it as UTF-8 or pass --encoding latin-1")
    data = load_data(path, encoding="latin-1")
    assert "café" in data.train.texts + data.val.texts


def test_unknown_encoding(tmp_path):
    assert "unknown encoding 'utf-9'" in error_of(UsageError, csv(tmp_path, balanced()),
                                                  encoding="utf-9")


def test_unknown_column_suggests(tmp_path):
    msg = error_of(DataError, csv(tmp_path, balanced()), label_col="lable")
    assert msg.endswith("column 'lable' not found in "
                        f"{tmp_path / 'data.csv'} (did you mean 'label'?); columns: text, label")


def test_same_text_and_label_column(tmp_path):
    msg = error_of(UsageError, csv(tmp_path, balanced()), text_col="text", label_col="text")
    assert "'text'" in msg and "differ" in msg


def test_single_class(tmp_path):
    msg = error_of(DataError, csv(tmp_path, balanced(5, ("pos",))))
    assert "only one class ('pos')" in msg and "at least 2 classes" in msg


def test_single_regression_value(tmp_path):
    msg = error_of(DataError, csv(tmp_path, [f"t{i},0.5" for i in range(6)]))
    assert "single value (0.5)" in msg and "regression" in msg


def test_class_too_small_to_split(tmp_path):
    msg = error_of(DataError, csv(tmp_path, balanced(5) + ["lonely row,rare"]))
    assert msg.startswith("class 'rare' has only 1 row in ")
    assert "data.csv" in msg and "--val VAL.csv" in msg
    # with a separate validation file the small class is fine
    val = csv(tmp_path, ["v,neg", "w,rare"], name="val.csv")
    assert load_data(csv(tmp_path, balanced(5) + ["lonely row,rare"]), val=val).label_names == (
        "neg", "pos", "rare")


def test_too_few_rows(tmp_path):
    msg = error_of(DataError, csv(tmp_path, ["a,x", "b,y", "c,x"]))
    assert "only 3 usable rows" in msg and "at least 4" in msg
    msg = error_of(DataError, csv(tmp_path, ["a,x", "b,y", "c,x", "d,y"]))
    assert "only 2 rows left for training" in msg


def test_val_with_unknown_class(tmp_path):
    val = csv(tmp_path, ["v,pos", "w,maybe", "x,unsure"], name="val.csv")
    msg = error_of(DataError, csv(tmp_path, balanced()), val=val)
    assert "val.csv has labels not seen in the training data: 'maybe', 'unsure'" in msg
    assert "known classes: 'neg', 'pos'" in msg


def test_val_missing_column(tmp_path):
    val = csv(tmp_path, ["v,pos"], header="text,lbl", name="val.csv")
    msg = error_of(DataError, csv(tmp_path, balanced()), val=val)
    assert "column 'label' not found in" in msg and "val.csv" in msg and "'lbl'" in msg


def test_regression_val_must_be_numeric(tmp_path):
    train = csv(tmp_path, [f"t{i},{i / 2}" for i in range(6)])
    val = csv(tmp_path, ["v,high"], name="val.csv")
    msg = error_of(DataError, train, val=val)
    assert "val.csv has non-numeric labels" in msg and "'high'" in msg


def test_test_with_unknown_class(tmp_path):
    test = csv(tmp_path, ["t,neutral"], name="test.csv")
    msg = error_of(DataError, csv(tmp_path, balanced()), test=test)
    assert "test.csv has labels not seen in the training data: 'neutral'" in msg


@pytest.mark.parametrize("frac", [0, 1, 1.5, -0.1])
def test_bad_val_frac(tmp_path, frac):
    msg = error_of(UsageError, csv(tmp_path, balanced()), val_frac=frac)
    assert msg == f"val_frac must satisfy 0 < val_frac < 1, got {frac}"


def test_bad_data_type():
    assert "got list" in error_of(UsageError, [["a", "b"]])


# -- read_texts ------------------------------------------------------------------------------

def test_read_texts_keeps_every_row(tmp_path):
    path = write(tmp_path, "new.csv", "id,comment\n1,hello\n2,\n3,bye\n")
    assert read_texts(path) == ("comment", ["hello", "", "bye"])
    assert read_texts(path, text_col="id") == ("id", ["1", "2", "3"])


def test_read_texts_single_column_and_dataframe(tmp_path):
    assert read_texts(write(tmp_path, "new.csv", "words\nfoo\nbar\n")) == ("words", ["foo", "bar"])
    frame = pd.DataFrame({"n": [1, 2], "body": ["x", None]})
    assert read_texts(frame) == ("body", ["x", ""])


def test_read_texts_errors(tmp_path):
    with pytest.raises(DataError, match=r"column 'txt' not found in .*new\.csv "
                                        r"\(did you mean 'text'\?\); columns: text"):
        read_texts(write(tmp_path, "new.csv", "text\nfoo\n"), text_col="txt")
    with pytest.raises(DataError, match="missing.csv not found"):
        read_texts(tmp_path / "missing.csv")
