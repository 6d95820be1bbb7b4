"""The training loop: feature cache, best-epoch weights, bucketing, failures."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from autotl.batching import batch_order, collate
from autotl.errors import StrategyError
from autotl.features import CACHE
from autotl.strategy import ParamGroup, Plan, Stage
from autotl.testing import tiny_setup
from autotl.train import fit


def _probe_plan(model, epochs=3):
    return Plan((Stage((ParamGroup(tuple(model.head_parameters()), 1e-2),), epochs),), batch_size=8)


@pytest.mark.parametrize("pooling", ["mean", "standard"])
def test_cached_and_uncached_probe_train_identically(tiny_model, pooling):
    train, val, settings = tiny_setup()
    heads = []
    for use_cache in (True, False):
        torch.manual_seed(0)
        model = tiny_model(pooling)
        result = fit(model, _probe_plan(model), train, val, replace(settings, use_cache=use_cache))
        heads.append((result.scores, [p.detach().clone() for p in model.head_parameters()]))
    assert heads[0][0] == heads[1][0]
    for a, b in zip(heads[0][1], heads[1][1]):
        # tolerance: features batched differently (padding width) differ in the last float bits
        assert torch.allclose(a, b, atol=1e-5)


def test_probe_features_are_computed_once_per_search(tiny_model):
    train, val, settings = tiny_setup(n=26)  # rows no other test uses: a cold cache
    before = CACHE.computed
    for lr in (1e-2, 3e-2, 1e-1):
        model = tiny_model("mean")
        plan = Plan((Stage((ParamGroup(tuple(model.head_parameters()), lr),), 2),), batch_size=8)
        fit(model, plan, train, val, settings)
    assert CACHE.computed - before == 2  # train and val features, once, for three trials


def test_cache_is_keyed_by_encoder_weights(tiny_model):
    train, val, settings = tiny_setup(n=28)
    model = tiny_model("mean")
    fit(model, _probe_plan(model, 1), train, val, settings)
    before = CACHE.computed
    with torch.no_grad():
        model.layers[0].output.dense.weight.add_(0.1)  # e.g. a strategy re-initialized a layer
    fit(model, _probe_plan(model, 1), train, val, settings)
    assert CACHE.computed - before == 2


def test_model_keeps_the_best_epochs_weights(tiny_model, monkeypatch):
    train, val, settings = tiny_setup()
    model = tiny_model("mean")
    snapshots, lefts, scores = [], [], iter([0.5, 0.9, 0.6])
    settings = replace(settings, metric=replace(settings.metric, fn=lambda targets, predicted: next(scores)))

    def record(epoch, score, epochs_left):
        snapshots.append([p.detach().clone() for p in model.head_parameters()])
        lefts.append(epochs_left)

    result = fit(model, _probe_plan(model), train, val, settings, on_epoch=record)
    assert result.best_epoch == 1 and result.best_score == 0.9 and result.scores == (0.5, 0.9, 0.6)
    assert lefts == [2, 1, 0]  # the objective never prunes at 0: a last epoch costs nothing more
    assert all(torch.equal(p, s) for p, s in zip(model.head_parameters(), snapshots[1]))
    assert not all(torch.equal(p, s) for p, s in zip(model.head_parameters(), snapshots[2]))


def test_nan_loss_fails_the_trial_with_a_message(tiny_model):
    train, val, settings = tiny_setup()
    model = tiny_model("mean")
    plan = Plan((Stage((ParamGroup(tuple(model.head_parameters()), 1e-2),), 1,
                       penalty=lambda m, step: torch.tensor(float("nan"))),), batch_size=8)
    with pytest.raises(StrategyError, match="nan"):
        fit(model, plan, train, val, settings)


def test_buckets_cover_every_row_once_and_group_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 100, size=1000)
    batches = batch_order(lengths, 32, np.random.default_rng(1))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    random_spread = np.mean([lengths[b].max() - lengths[b].min() for b in np.array_split(rng.permutation(1000), 32)])
    assert spread < random_spread / 3


def test_collate_pads_to_the_longest_in_the_batch():
    from autotl.batching import Encoded

    data = Encoded(((1, 2, 3), (4,), (5, 6)), np.zeros(3), "k")
    ids, mask = collate(data, np.array([1, 2]), pad_id=0)
    assert ids.tolist() == [[4, 0], [5, 6]] and mask.tolist() == [[1, 0], [1, 1]]


def test_plan_rejects_empty_stages():
    with pytest.raises(ValueError, match="at least one"):
        Plan(())
    with pytest.raises(ValueError, match="epochs"):
        Plan((Stage((ParamGroup((torch.nn.Parameter(torch.zeros(1)),), 1e-3),), 0),))
