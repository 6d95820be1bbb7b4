"""Fine-tuning families: every weight (`full_finetune`) or all but the bottom (`freeze`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..hookspecs import hookimpl
from ..strategy import ParamGroup, Plan, Stage, TrainingSpace, key, read_training, suggest_training


def _trainable_above(model, frozen_blocks: int) -> tuple:
    """Every parameter except those of the bottom `frozen_blocks` blocks (embeddings first)."""
    frozen = {id(p) for block in model.blocks()[:frozen_blocks] for p in block.parameters()}
    return tuple(p for p in model.parameters() if id(p) not in frozen)


@dataclass
class FullFinetune:
    name: str = "full_finetune"
    description: str = "every weight trains (Devlin et al. 2019 recipe: AdamW, lr 2e-5..5e-5, 3 epochs)"
    space: TrainingSpace = field(default_factory=lambda: TrainingSpace(lr=(1e-5, 1.5e-4)))
    defaults: dict = field(default_factory=lambda: {
        "full_finetune.lr": 5e-5, "full_finetune.epochs": 3,
        "full_finetune.batch_size": 32, "full_finetune.weight_decay": 0.01,
    })

    def search_space(self, trial):
        return suggest_training(trial, self.name, self.space)

    def prepare(self, model, params):
        t = read_training(self.name, params)
        group = ParamGroup(tuple(model.parameters()), t.lr, t.weight_decay)
        return Plan((Stage((group,), t.epochs),), batch_size=t.batch_size, summary="all weights train")


@dataclass
class Freeze:
    name: str = "freeze"
    description: str = "embeddings and the bottom k layers frozen, the rest fine-tuned; k searched"
    space: TrainingSpace = field(default_factory=lambda: TrainingSpace(lr=(2e-5, 5e-4)))
    defaults: dict = field(default_factory=lambda: {
        "freeze.frozen_frac": 0.67, "freeze.lr": 1e-4, "freeze.epochs": 3,
        "freeze.batch_size": 32, "freeze.weight_decay": 0.01,
    })

    def search_space(self, trial):
        # A fraction of the depth, not a layer count: the space is fixed before the
        # backbone is known, and means the same on 6-layer and 24-layer models.
        frac = trial.suggest_float(key(self.name, "frozen_frac"), 0.15, 0.9)
        return {key(self.name, "frozen_frac"): frac, **suggest_training(trial, self.name, self.space)}

    def prepare(self, model, params):
        t = read_training(self.name, params)
        layers = len(model.layers)
        k = min(max(round(float(params[key(self.name, "frozen_frac")]) * layers), 1), layers - 1)
        group = ParamGroup(_trainable_above(model, 1 + k), t.lr, t.weight_decay)
        return Plan((Stage((group,), t.epochs),), batch_size=t.batch_size,
                    summary=f"embeddings + {k}/{layers} layers frozen")


@hookimpl
def autotl_strategies():
    return [FullFinetune(), Freeze()]
