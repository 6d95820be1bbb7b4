"""The layer activation cache: same training as without it, computed once, bounded in bytes."""

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

import autotl.train
from autotl.activations import ActivationCache
from autotl.batching import collate
from autotl.strategy import ParamGroup, Plan, Stage
from autotl.testing import tiny_setup
from autotl.train import StageForward, fit

# Cached states are computed in length-sorted batches of 128, the uncached path in training
# batches of another padding width: the same numbers up to float32 rounding.
TOLERANCE = 1e-5


def _top_plan(model, epochs=2):
    """Freeze the embeddings and layer 0 of the tiny 2-layer BERT; train layer 1 and the head."""
    params = [*model.layers[1].parameters(), *model.head_parameters()]
    return Plan((Stage((ParamGroup(tuple(params), 1e-3),), epochs),), batch_size=8)


def _record_losses(monkeypatch) -> list[float]:
    losses = []
    original = autotl.train._loss

    def recording(logits, targets, settings, *rest):
        loss = original(logits, targets, settings, *rest)
        losses.append(loss.item())
        return loss

    monkeypatch.setattr(autotl.train, "_loss", recording)
    return losses


@pytest.mark.parametrize("pooling", ["mean", "standard"])
def test_cached_and_uncached_top_layer_training_give_the_same_losses(tiny_model, pooling, monkeypatch):
    train, val, settings = tiny_setup(n=30)
    runs, losses = [], _record_losses(monkeypatch)
    for use_cache in (True, False):
        losses.clear()
        torch.manual_seed(0)
        model = tiny_model(pooling)
        result = fit(model, _top_plan(model), train, val, replace(settings, use_cache=use_cache))
        runs.append((list(losses), result.scores, [p.detach().clone() for p in model.layers[1].parameters()]))
    (cached, cached_scores, cached_weights), (plain, plain_scores, plain_weights) = runs
    assert len(cached) == len(plain) == 2 * 4  # 2 epochs of 30 rows in batches of 8
    np.testing.assert_allclose(cached, plain, rtol=TOLERANCE, atol=TOLERANCE)
    assert cached_scores == plain_scores
    for a, b in zip(cached_weights, plain_weights):
        assert torch.allclose(a, b, atol=1e-4)
    assert any(not torch.equal(a, b) for a, b in zip(cached_weights, tiny_model(pooling).layers[1].parameters()))


def test_stage_with_frozen_bottom_layers_trains_from_cached_states(tiny_model):
    train, val, settings = tiny_setup(n=30)
    model = tiny_model("mean")
    for p in model.parameters():
        p.requires_grad_(False)
    for p in [*model.layers[1].parameters(), *model.head_parameters()]:
        p.requires_grad_(True)
    forward = StageForward(model, settings, encoder_frozen=False)
    assert (forward.mode, forward.depth) == ("layers", 1)
    model.eval()
    index = np.arange(10)
    ids, mask = collate(train, index, settings.pad_id)
    with torch.no_grad():
        expected = model(ids, mask)
        _, got = forward(train, index)
    assert torch.allclose(got, expected, atol=TOLERANCE)


def test_deeper_request_starts_from_the_deepest_cached_depth(tiny_model):
    train, _, settings = tiny_setup(n=32)
    cache = ActivationCache(max_bytes=2**30)
    model = tiny_model("standard")
    args = dict(pad_id=settings.pad_id, device="cpu", autocast=autotl.train.autocast_for("cpu"))
    one = cache.get(model, train, 1, **args)
    assert cache.computed_layers == 1
    two = cache.get(model, train, 2, **args)
    assert cache.computed_layers == 2  # layer 1 only, on top of the cached layer-0 states
    assert cache.get(model, train, 1, **args) is one and cache.get(model, train, 2, **args) is two
    assert cache.computed_layers == 2
    # The same as computing depth 2 from scratch.
    fresh = ActivationCache(max_bytes=2**30).get(model, train, 2, **args)
    assert torch.allclose(fresh.states, two.states, atol=TOLERANCE)
    assert one.states.shape[0] == int(train.lengths.sum())  # unpadded: one row per token


def test_entries_are_keyed_by_the_weights_below_the_depth_only(tiny_model):
    train, _, settings = tiny_setup(n=34)
    cache = ActivationCache(max_bytes=2**30)
    model = tiny_model("mean")
    args = dict(pad_id=settings.pad_id, device="cpu", autocast=autotl.train.autocast_for("cpu"))
    cache.get(model, train, 1, **args)
    with torch.no_grad():
        model.layers[1].output.dense.weight.add_(0.1)  # above the cached depth: still valid
    cache.get(model, train, 1, **args)
    assert cache.computed_layers == 1
    with torch.no_grad():
        model.layers[0].output.dense.weight.add_(0.1)  # below it: recomputed
    cache.get(model, train, 1, **args)
    assert cache.computed_layers == 2


def test_cache_stays_within_its_byte_bound(tiny_model):
    train, val, settings = tiny_setup(n=36)
    model = tiny_model("mean")
    args = dict(pad_id=settings.pad_id, device="cpu", autocast=autotl.train.autocast_for("cpu"))
    one_split = int(train.lengths.sum()) * model.config.hidden_size * 4
    cache = ActivationCache(max_bytes=int(one_split * 1.5))
    cache.get(model, train, 1, **args)
    cache.get(model, val, 1, **args)  # evicts train's entry (least recently used)
    assert cache.nbytes <= cache.max_bytes
    cache.get(model, train, 1, **args)
    assert cache.computed_layers == 3


def test_too_big_for_the_bound_trains_without_the_cache_and_says_so(tiny_model, monkeypatch, caplog):
    train, val, settings = tiny_setup(n=38)
    monkeypatch.setattr(autotl.train, "ACTIVATIONS", ActivationCache(max_bytes=1000))
    runs, losses = [], _record_losses(monkeypatch)
    for use_cache in (True, False):
        losses.clear()
        torch.manual_seed(0)
        model = tiny_model("mean")
        with caplog.at_level(logging.INFO, logger="autotl"):
            fit(model, _top_plan(model, 1), train, val, replace(settings, use_cache=use_cache))
        runs.append(list(losses))
    assert "AUTOTL_ACTIVATION_CACHE_MB" in caplog.text and "running the frozen layers every step" in caplog.text
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-6)
    assert autotl.train.ACTIVATIONS.nbytes == 0
