"""autotl-peft: discovered through its entry point, conformant, merged before export."""

import pytest
import torch

from autotl.export import load_model, save_best
from autotl.plugins import Registry
from autotl.backbone import load_tokenizer
from autotl.testing import check_strategy, shared_backbone, tiny_model, tiny_setup
from autotl.train import fit

REGISTERED = Registry().strategies()


def test_discovered_through_the_entry_point_not_by_import():
    for name in ("lora", "ia3"):
        assert name in REGISTERED, "autotl-peft is not installed (pip install -e plugins/autotl-peft)"
        assert REGISTERED[name].plugin == "autotl-peft"
        assert REGISTERED[name].distribution == "autotl-peft 0.1.0"


@pytest.mark.parametrize("name", ["lora", "ia3"])
def test_conformance(name):
    check_strategy(REGISTERED[name].strategy)


@pytest.mark.parametrize("name", ["lora", "ia3"])
@pytest.mark.parametrize("pooling", ["mean", "standard"])
def test_trains_adapters_and_head_only_then_merges_exactly(name, pooling, tmp_path):
    from dataclasses import replace

    strategy = REGISTERED[name].strategy
    model = tiny_model(pooling)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    plan = strategy.prepare(model, {**strategy.defaults, f"{name}.epochs": 2})
    adapters = [n for n, _ in model.named_parameters() if f"{name}_" in n]
    assert adapters, "no adapter parameters were injected"
    train, val, settings = tiny_setup()
    fit(model, replace(plan, finalize=None), train, val, settings)  # train, not merged yet
    changed = {n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])}
    head = {n for n, p in model.named_parameters() if any(p is h for h in model.head_parameters())}
    assert changed <= head, f"weights outside the adapters and head changed: {sorted(changed - head)}"
    ids = torch.tensor([[2, 5, 6, 17, 3], [2, 9, 3, 0, 0]])
    mask = (ids != 0).long()
    model.eval()
    adapted = model(ids, mask)
    plan.finalize(model, None, None)
    assert not [n for n, _ in model.named_parameters() if f"{name}_" in n], "adapters left after merging"
    assert torch.allclose(model(ids, mask), adapted, atol=1e-5)
    save_best(model, load_tokenizer(shared_backbone()), tmp_path, {"data": {}, "trial": 0}, max_length=32)
    loaded, _, _ = load_model(tmp_path)
    assert torch.allclose(loaded(ids, mask), adapted, atol=1e-5)
    assert set(loaded.state_dict()) == set(tiny_model(pooling).state_dict())  # plain weights only
