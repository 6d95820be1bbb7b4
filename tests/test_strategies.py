"""Each built-in strategy's meaning, proven on the tiny BERT."""

import pytest
import torch

from autotl.plugins import Registry
from autotl.testing import tiny_setup
from autotl.train import fit

STRATEGIES = {name: reg.strategy for name, reg in Registry().strategies().items()}


def _train(strategy, model, **overrides):
    params = {**strategy.defaults, f"{strategy.name}.epochs": 2, **overrides}
    plan = strategy.prepare(model, params)
    train, val, settings = tiny_setup()
    fit(model, plan, train, val, settings)
    return plan


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("pooling", ["mean", "standard"])
def test_freeze_keeps_frozen_weights_bit_identical(tiny_model, pooling):
    model = tiny_model(pooling)
    before = _snapshot(model)
    # frozen_frac 0.5 of 2 layers -> embeddings + layer 0 frozen; layer 1 and the head train
    plan = _train(STRATEGIES["freeze"], model, **{"freeze.frozen_frac": 0.5})
    assert plan.summary == "embeddings + 1/2 layers frozen"
    after = _snapshot(model)
    frozen = [n for n in before if ".embeddings." in n or ".layer.0." in n]
    trained = [n for n in before if ".layer.1." in n]
    assert frozen and trained
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    assert any(not torch.equal(before[n], after[n]) for n in trained)


@pytest.mark.parametrize("pooling", ["mean", "standard"])
def test_linear_probe_changes_only_the_head(tiny_model, pooling):
    model = tiny_model(pooling)
    before = _snapshot(model)
    head = {id(p) for p in model.head_parameters()}
    names_head = {n for n, p in model.named_parameters() if id(p) in head}
    _train(STRATEGIES["linear_probe"], model)
    after = _snapshot(model)
    assert names_head and all(not torch.equal(before[n], after[n]) for n in names_head)
    assert all(torch.equal(before[n], after[n]) for n in before if n not in names_head)


def test_full_finetune_trains_every_weight(tiny_model):
    model = tiny_model("mean")
    plan = STRATEGIES["full_finetune"].prepare(model, STRATEGIES["full_finetune"].defaults)
    assert plan.trainable_parameters() == sum(p.numel() for p in model.parameters())


def test_l2sp_penalty_is_zero_at_start_and_pulls_back_to_pretrained(tiny_model):
    model = tiny_model("mean")
    strategy = STRATEGIES["l2sp"]
    params = {**strategy.defaults, "l2sp.alpha": 0.5, "l2sp.beta": 0.0}
    penalty = strategy.prepare(model, params).stages[0].penalty
    start = [p.detach().clone() for p in model.encoder_parameters()]
    assert penalty(model, None).item() == 0.0
    with torch.no_grad():  # move every encoder weight away from its pretrained value
        for p in model.encoder_parameters():
            p.add_(torch.randn_like(p) * 0.01)
    for p in model.parameters():
        p.requires_grad_(True)
        p.grad = None
    value = penalty(model, None)
    assert value.item() > 0
    value.backward()
    for p, p0 in zip(model.encoder_parameters(), start):
        # gradient = alpha * (w - w0): a descent step moves w back toward w0
        assert torch.allclose(p.grad, 0.5 * (p.detach() - p0), atol=1e-6)
        stepped = p.detach() - 0.1 * p.grad
        assert (stepped - p0).norm() < (p.detach() - p0).norm()


def test_l2sp_differs_from_plain_finetune_only_by_the_penalty(tiny_model):
    model = tiny_model("mean")
    plan = STRATEGIES["l2sp"].prepare(model, STRATEGIES["l2sp"].defaults)
    assert plan.stages[0].penalty is not None
    assert plan.trainable_parameters() == sum(p.numel() for p in model.parameters())
