"""benchmarks/self_training_probe.py: its draws keep the evaluation rows apart, and a
student that learns from confident pseudo-labels beats its teacher on separable data."""

import numpy as np
import pytest

from test_compare_script import _load


@pytest.fixture(scope="module")
def probe():
    import sys

    module = _load("self_training_probe")
    yield module
    del sys.modules[module.__name__]


def test_the_labelled_unlabeled_and_evaluation_rows_are_disjoint_and_every_class_labelled(probe):
    labels = np.array(["a"] * 90 + ["b"] * 9 + ["c"] * 1 + ["d"] * 100)
    lab, unl, ev = probe.draw(labels, seed=0, n_labels=20, n_unlabeled=50)
    assert not (set(lab) & set(unl) or set(lab) & set(ev) or set(unl) & set(ev))
    assert len(lab) + len(unl) + len(ev) == len(labels) and len(unl) == 50
    assert {c: int((labels[lab] == c).sum()) for c in "abcd"} == {"a": 9, "b": 2, "c": 1, "d": 10}


def test_a_student_on_confident_pseudo_labels_learns_what_the_few_labels_missed(probe):
    rng = np.random.default_rng(0)
    y = np.array(["neg", "pos"] * 300)
    X = rng.normal(size=(600, 5)) + np.where(y == "pos", 1.5, -1.5)[:, None] * np.array([1, 0.3, 0, 0, 0])
    result = probe.one_seed(X, y, seed=1, n_labels=6, n_unlabeled=300)
    best = max(s["accuracy"] for s in result["students"])
    assert result["evaluation_rows"] == 600 - 6 - 300 and best >= result["teacher"]["accuracy"]
    text = probe.table([{"dataset": "toy", **result}])
    assert text.count("\n| toy | 1 |") == 2 and text.count("| **mean** |") == 2  # accuracy and macro-F1


def test_balanced_selection_caps_each_class_at_its_labelled_share_most_confident_first(probe):
    keep = np.array([True] * 9 + [False])
    confidence = np.array([0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.93, 0.92, 0.91, 0.2])
    guessed = np.array(["a"] * 8 + ["b", "b"])
    picked = probe.balanced(keep, confidence, guessed, np.array(["a", "b", "b"]))  # a: 1/3 of 9 = 3, b: 6
    assert picked.tolist() == [True] * 3 + [False] * 5 + [True, False]
