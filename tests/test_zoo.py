"""The meaning of each strategy in the zoo, proven on the tiny BERT (2 layers)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from autotl.plugins import Registry
from autotl.testing import tiny_model, tiny_setup
from autotl.train import fit

ZOO = {name: reg.strategy for name, reg in Registry().strategies().items()}


def _params(name, **overrides):
    return {**ZOO[name].defaults, **{f"{name}.{k}": v for k, v in overrides.items()}}


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed(model, before):
    return {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}


def _names(model, params):
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def _train(model, plan, **settings):
    train, val, base = tiny_setup()
    return fit(model, plan, train, val, replace(base, **settings))


def test_the_zoo_is_registered():
    expected = {"full_finetune", "linear_probe", "freeze", "l2sp", "lp_ft", "llrd", "gradual_unfreeze",
                "bitfit", "l1", "l2", "reinit_top", "bss", "delta", "wise_ft", "surgical"}
    assert expected <= set(ZOO)


def test_lp_ft_probes_the_head_then_tunes_everything(monkeypatch):
    model = tiny_model()
    plan = ZOO["lp_ft"].prepare(model, _params("lp_ft", probe_epochs=2, epochs=1))
    probe, tune = plan.stages
    assert _names(model, probe.groups[0].params) == _names(model, model.head_parameters())
    assert probe.groups[0].lr == ZOO["lp_ft"].defaults["lp_ft.probe_lr"]
    assert _names(model, tune.groups[0].params) == {n for n, _ in model.named_parameters()}
    before = _snapshot(model)
    _train(model, plan, max_epochs=2)  # the probe stage only
    assert _changed(model, before) == _names(model, model.head_parameters())
    scores = iter(range(100))  # every epoch better than the last: the final weights are kept
    metric = replace(tiny_setup()[2].metric, fn=lambda targets, predicted: float(next(scores)))
    _train(model, plan, metric=metric)  # both stages
    assert any(".layer." in n for n in _changed(model, before))


def test_llrd_gives_each_layer_its_decayed_learning_rate(monkeypatch):
    model = tiny_model()
    plan = ZOO["llrd"].prepare(model, _params("llrd", lr=1e-3, decay=0.5, epochs=1))
    rate = {}
    for group in plan.stages[0].groups:
        for name in _names(model, group.params):
            rate[name] = group.lr
    assert all(v == 1e-3 for n, v in rate.items() if "head_" in n)  # the head: base lr
    assert all(v == pytest.approx(1e-3 * 0.5) for n, v in rate.items() if ".layer.1." in n)  # top layer
    assert all(v == pytest.approx(1e-3 * 0.25) for n, v in rate.items() if ".layer.0." in n)
    assert all(v == pytest.approx(1e-3 * 0.125) for n, v in rate.items() if ".embeddings." in n)
    assert set(rate) == {n for n, _ in model.named_parameters()}
    seen = []  # and the optimizer really gets those rates

    class Spy(torch.optim.AdamW):
        def __init__(self, groups, *a, **k):
            seen.extend(sorted(g["lr"] for g in groups))
            super().__init__(groups, *a, **k)

    monkeypatch.setattr("autotl.train.torch.optim.AdamW", Spy)
    _train(model, plan)
    assert seen == sorted(g.lr for g in plan.stages[0].groups)


def test_gradual_unfreeze_opens_one_more_layer_each_epoch():
    model = tiny_model()
    plan = ZOO["gradual_unfreeze"].prepare(model, _params("gradual_unfreeze", epochs=3))
    opened = [_names(model, s.groups[0].params) for s in plan.stages]
    assert [s.epochs for s in plan.stages] == [1, 1, 1]
    assert any(".layer.1." in n for n in opened[0]) and not any(".layer.0." in n for n in opened[0])
    assert any(".layer.0." in n for n in opened[1]) and not any(".embeddings." in n for n in opened[1])
    assert opened[2] == {n for n, _ in model.named_parameters()}
    before = _snapshot(model)
    _train(model, plan, max_epochs=1)
    changed = _changed(model, before)
    assert any(".layer.1." in n for n in changed)
    assert not any(".layer.0." in n or ".embeddings." in n for n in changed)


def test_bitfit_changes_only_biases_and_the_head():
    model = tiny_model()
    before = _snapshot(model)
    _train(model, ZOO["bitfit"].prepare(model, _params("bitfit", epochs=1)))
    head = _names(model, model.head_parameters())
    changed = _changed(model, before)
    assert any(n.endswith("bias") and n not in head for n in changed)
    assert all(n.endswith("bias") or n in head for n in changed)


@pytest.mark.parametrize("name,power", [("l1", 1), ("l2", 2)])
def test_l1_l2_pull_every_weight_toward_zero(name, power):
    model = tiny_model()
    penalty = ZOO[name].prepare(model, _params(name, strength=1e-3)).stages[0].penalty
    weights = list(model.parameters())
    expected = 1e-3 * sum((p.abs() ** power).sum() for p in weights)
    for p in weights:
        p.requires_grad_(True)
    value = penalty(model, None)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5) and value.item() > 0  # not zero at start
    value.backward()
    for p in weights:  # a descent step shrinks every nonzero weight's magnitude
        grad = p.grad
        expected_grad = 1e-3 * (torch.sign(p) if power == 1 else 2 * p)
        assert torch.allclose(grad, expected_grad.detach(), atol=1e-9)


def test_reinit_top_reinitializes_only_the_top_layers():
    pretrained = tiny_model()
    model = tiny_model()
    ZOO["reinit_top"].prepare(model, _params("reinit_top", layers=1))
    p0 = dict(pretrained.named_parameters())
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, p0[n]) and "head_" not in n}
    assert moved and all(".layer.1." in n for n in moved)
    weight = model.layers[1].intermediate.dense.weight
    assert weight.std().item() == pytest.approx(model.config.initializer_range, rel=0.2)


def test_bss_penalizes_the_smallest_singular_values_of_the_batch_features():
    from autotl.strategy import Step

    penalty = ZOO["bss"].prepare(tiny_model(), _params("bss", eta=0.5, k=2)).stages[0].penalty
    feats = torch.randn(8, 5)
    singular = np.linalg.svd(feats.numpy(), compute_uv=False)
    expected = 0.5 * float((singular[-2:] ** 2).sum())
    assert penalty(None, Step(feats, None, None)).item() == pytest.approx(expected, rel=1e-4)
    low_rank = torch.randn(8, 1) @ torch.randn(1, 5)  # rank 1: the smallest values are 0
    assert penalty(None, Step(low_rank, None, None)).item() == pytest.approx(0.0, abs=1e-5)


def test_delta_is_zero_at_start_and_pulls_features_back_to_the_pretrained_ones():
    from autotl.features import CACHE
    from autotl.strategy import Step

    model = tiny_model()
    train, val, settings = tiny_setup()
    penalty = ZOO["delta"].prepare(model, _params("delta", alpha=1.0)).stages[0].penalty
    rows = np.arange(8)
    ids_mask = __import__("autotl.batching", fromlist=["collate"]).collate(train, rows, settings.pad_id)
    model.eval()
    with torch.no_grad():
        feats = model.features(*ids_mask)
    before = CACHE.computed
    assert penalty(model, Step(feats, rows, train, settings.pad_id)).item() == pytest.approx(0.0, abs=1e-8)
    computed = CACHE.computed - before
    assert computed <= 1  # the teacher's features: once, from the shared cache
    moved = feats + 0.1
    assert penalty(model, Step(moved, rows, train, settings.pad_id)).item() == pytest.approx(
        (0.1 ** 2) * feats.shape[1], rel=1e-3)
    penalty(model, Step(moved, rows, train, settings.pad_id))
    assert CACHE.computed - before == computed  # not recomputed per step


def test_wise_ft_chooses_the_mixing_weight_on_validation_and_reapplies_it():
    model = tiny_model()
    plan = ZOO["wise_ft"].prepare(model, _params("wise_ft"))
    start = [p.detach().clone() for p in model.encoder_parameters()]
    with torch.no_grad():
        for p in model.encoder_parameters():
            p.add_(1.0)  # "fine-tuned": every encoder weight moved by +1
    tuned = [p.detach().clone() for p in model.encoder_parameters()]
    first = model.encoder_parameters()[0]
    # validation prefers the weights 60% of the way from pretrained to fine-tuned
    target = start[0] + 0.6

    def score():
        return -float((first.detach() - target).abs().max())

    chosen = plan.finalize(model, score, None)
    assert chosen == {"alpha": 0.6}
    for p, w0, w1 in zip(model.encoder_parameters(), start, tuned):
        assert torch.allclose(p, 0.4 * w0 + 0.6 * w1, atol=1e-6)
    # the refit has no validation rows: it applies the trial's choice
    refit = tiny_model()
    plan = ZOO["wise_ft"].prepare(refit, _params("wise_ft"))
    with torch.no_grad():
        for p in refit.encoder_parameters():
            p.add_(1.0)
    assert plan.finalize(refit, None, {"alpha": 0.6}) == {"alpha": 0.6}
    assert torch.allclose(refit.encoder_parameters()[0], model.encoder_parameters()[0], atol=1e-6)


@pytest.mark.parametrize("block,layer", [("bottom", 0), ("top", 1)])
def test_surgical_trains_one_block_and_the_head(block, layer):
    model = tiny_model()
    before = _snapshot(model)
    _train(model, ZOO["surgical"].prepare(model, _params("surgical", block=block, epochs=1)))
    head = _names(model, model.head_parameters())
    changed = _changed(model, before) - head
    assert changed and all(f".layer.{layer}." in n for n in changed)
