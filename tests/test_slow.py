"""Slow: the real default backbone on a few hundred rows of shared SST-2 (run with -m slow)."""

from pathlib import Path

import pytest

import autotl

SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"


@pytest.mark.slow
def test_default_backbone_beats_chance_on_sst2(tmp_path):
    if not SST2.is_dir():
        pytest.fail(f"shared data not found at {SST2}; slow tests need ../shared/data beside the repo")
    import pandas as pd

    train = pd.read_csv(SST2 / "train.csv").head(400)
    test = pd.read_csv(SST2 / "test.csv").head(300)
    # rescore=0: re-scoring finalists on more folds has its own fast tests; here it would
    # train the full fine-tune four more times
    result = autotl.search(train, test=test, n_trials=2, strategies=["linear_probe", "full_finetune"],
                           out=tmp_path / "run", progress=False, rescore=0)
    accuracy = result.test_scores["metrics"]["accuracy"]
    assert accuracy > 0.70, f"test accuracy {accuracy:.3f} is not well above chance (0.5)"
    predictions = autotl.predict(tmp_path / "run", test)
    assert (predictions["prediction"] == test["label"]).mean() == pytest.approx(accuracy)
