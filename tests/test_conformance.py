"""The conformance suite over every registered strategy (built-ins and installed plugins)."""

import pytest

from autotl.plugins import Registry
from autotl.testing import StrategyConformance, check_strategy

REGISTERED = Registry().strategies()


@pytest.fixture(params=sorted(REGISTERED))
def strategy(request):
    return REGISTERED[request.param].strategy


class TestEveryStrategy(StrategyConformance):
    pass


def test_builtins_are_registered_through_entry_points():
    for name in ("full_finetune", "linear_probe", "freeze", "l2sp"):
        assert REGISTERED[name].distribution.startswith("autotl "), REGISTERED[name]


def test_check_strategy_names_the_broken_rule():
    class Leaky:
        name, description = "leaky", "uses an unnamespaced key"
        defaults = {"leaky.lr": 0.1}

        def search_space(self, trial):
            return {"lr": trial.suggest_float("lr", 0.01, 1.0)}

        def prepare(self, model, params):
            raise AssertionError("not reached")

    with pytest.raises(AssertionError, match="leaky"):
        check_strategy(Leaky())
