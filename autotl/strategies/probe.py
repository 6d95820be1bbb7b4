"""`linear_probe`: the pretrained encoder stays frozen; only the new head trains.

With the whole encoder frozen, the loop computes the head's input features once per
search (`autotl.features`) and every probe trial trains on them: a trial costs seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..hookspecs import hookimpl
from ..strategy import ParamGroup, Plan, Stage, TrainingSpace, read_training, suggest_training


@dataclass
class LinearProbe:
    name: str = "linear_probe"
    description: str = "encoder frozen, only the head trains (features computed once per search)"
    space: TrainingSpace = field(default_factory=lambda: TrainingSpace(
        lr=(1e-3, 5e-2), epochs=(10, 40), batch_sizes=(32, 64), weight_decay=(0.0, 0.01)))
    defaults: dict = field(default_factory=lambda: {
        "linear_probe.lr": 1e-2, "linear_probe.epochs": 25,
        "linear_probe.batch_size": 32, "linear_probe.weight_decay": 0.0,
    })

    def search_space(self, trial):
        return suggest_training(trial, self.name, self.space)

    def prepare(self, model, params):
        t = read_training(self.name, params)
        group = ParamGroup(tuple(model.head_parameters()), t.lr, t.weight_decay)
        return Plan((Stage((group,), t.epochs),), batch_size=t.batch_size, warmup_ratio=0.0,
                    summary="head only")


@hookimpl
def autotl_strategies():
    return [LinearProbe()]
