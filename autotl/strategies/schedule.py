"""Families that change *when* or *how fast* each layer learns.

`llrd`: layer-wise learning-rate decay / discriminative learning rates (Howard & Ruder
2018; Clark et al. 2020): the head learns at lr, the top layer at lr * decay, each layer
below at one more factor of decay, the embeddings at the smallest rate.
`gradual_unfreeze`: ULMFiT's schedule: the head and top layer first, one more layer each
epoch, until everything trains.
"""

from __future__ import annotations

from ..hookspecs import hookimpl
from ..strategy import ParamGroup, Plan, Stage, TrainedStrategy, TrainingSpace


def layer_rates(model, lr: float, decay: float) -> list[tuple[list, float]]:
    """(params, lr) per depth: head and anything above the layers at lr, layer i of L at
    lr * decay**(L - i), embeddings at lr * decay**(L + 1)."""
    blocks = model.blocks()  # embeddings, layer 0 .. layer L-1
    layers = len(blocks) - 1
    groups = [(model.outside_blocks(), lr)]  # head, pooler
    for i in range(layers - 1, -1, -1):
        groups.append((list(blocks[1 + i].parameters()), lr * decay ** (layers - i)))
    groups.append((list(blocks[0].parameters()), lr * decay ** (layers + 1)))
    return groups


class LLRD(TrainedStrategy):
    name = "llrd"
    description = "layer-wise lr decay: lower layers learn slower (ULMFiT, ELECTRA)"
    space = TrainingSpace(lr=(2e-5, 3e-4), epochs=(2, 6))
    defaults = {"llrd.decay": 0.8, "llrd.lr": 1e-4, "llrd.epochs": 3, "llrd.batch_size": 32,
                "llrd.weight_decay": 0.01}

    def own_space(self, trial):
        return {self.key("decay"): trial.suggest_float(self.key("decay"), 0.5, 0.95)}

    def prepare(self, model, params):
        t = self.training(params)
        decay = float(params[self.key("decay")])
        groups = tuple(ParamGroup(tuple(ps), rate, t.weight_decay) for ps, rate in layer_rates(model, t.lr, decay))
        return Plan((Stage(groups, t.epochs),), batch_size=t.batch_size, summary=f"lr x{decay:.2f} per layer down")


class GradualUnfreeze(TrainedStrategy):
    name = "gradual_unfreeze"
    description = "ULMFiT: head and top layer train first, one more layer each epoch"
    space = TrainingSpace(lr=(2e-5, 3e-4), epochs=(3, 6))
    defaults = {"gradual_unfreeze.lr": 1e-4, "gradual_unfreeze.epochs": 4, "gradual_unfreeze.batch_size": 32,
                "gradual_unfreeze.weight_decay": 0.01}

    def prepare(self, model, params):
        t = self.training(params)
        blocks = model.blocks()
        top = model.outside_blocks()
        stages = []
        for epoch in range(t.epochs):
            # epoch 0: head + top layer; each later epoch one block more; the last epoch
            # trains everything that has been unfrozen by then (all, when epochs > layers)
            opened = blocks[max(len(blocks) - 1 - epoch, 0):]
            trainable = top + [p for b in opened for p in b.parameters()]
            stages.append(Stage((ParamGroup(tuple(trainable), t.lr, t.weight_decay),), 1))
        return Plan(tuple(stages), batch_size=t.batch_size, summary="one more layer each epoch")


@hookimpl
def autotl_strategies():
    return [LLRD(), GradualUnfreeze()]
