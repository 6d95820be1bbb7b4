"""Fine-tuning families that differ in *which* weights train.

`full_finetune` (all), `freeze` (all but the embeddings and bottom k layers), `surgical`
(one block of layers: Lee et al. 2022), `bitfit` (only biases: Ben Zaken et al. 2022) and
`reinit_top` (all, after re-initializing the top k layers: Zhang et al. 2021). The new head
always trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..hookspecs import hookimpl
from ..strategy import TrainingSpace, key, namespaced, one_stage, read_training, suggest_training


def _trainable_above(model, frozen_blocks: int) -> tuple:
    """Every parameter except those of the bottom `frozen_blocks` blocks (embeddings first)."""
    frozen = {id(p) for block in model.blocks()[:frozen_blocks] for p in block.parameters()}
    return tuple(p for p in model.parameters() if id(p) not in frozen)


def _depth(model, frac: float, low: int = 1) -> int:
    """A fraction of the encoder's depth as a layer count in [low, layers - 1]."""
    layers = len(model.layers)
    return min(max(round(frac * layers), low), layers - 1)


def _defaults(name: str, lr: float, **extra) -> dict:
    return namespaced(name, **extra, lr=lr, epochs=3, batch_size=32, weight_decay=0.01)


@dataclass
class FullFinetune:
    name: str = "full_finetune"
    description: str = "every weight trains (Devlin et al. 2019 recipe: AdamW, lr 2e-5..5e-5, 3 epochs)"
    # Up to 10 epochs: a few hundred rows need many passes (measured: benchmarks/portfolio.py).
    space: TrainingSpace = field(default_factory=lambda: TrainingSpace(lr=(1e-5, 1.5e-4), epochs=(2, 10)))
    defaults: dict = field(default_factory=lambda: _defaults("full_finetune", 5e-5))

    def search_space(self, trial):
        return suggest_training(trial, self.name, self.space)

    def prepare(self, model, params):
        return one_stage(model.parameters(), read_training(self.name, params), summary="all weights train")


@dataclass
class Freeze:
    name: str = "freeze"
    description: str = "embeddings and the bottom k layers frozen, the rest fine-tuned; k searched"
    space: TrainingSpace = field(default_factory=lambda: TrainingSpace(lr=(2e-5, 5e-4)))
    defaults: dict = field(default_factory=lambda: _defaults("freeze", 1e-4, frozen_frac=0.67))

    def search_space(self, trial):
        # A fraction of the depth, not a layer count: the space is fixed before the
        # backbone is known, and means the same on 6-layer and 24-layer models.
        frac = trial.suggest_float(key(self.name, "frozen_frac"), 0.15, 0.9)
        return {key(self.name, "frozen_frac"): frac, **suggest_training(trial, self.name, self.space)}

    def prepare(self, model, params):
        k = _depth(model, float(params[key(self.name, "frozen_frac")]))
        return one_stage(_trainable_above(model, 1 + k), read_training(self.name, params),
                         summary=f"embeddings + {k}/{len(model.layers)} layers frozen")


BLOCKS = ("bottom", "middle", "top")


@dataclass
class Surgical:
    name: str = "surgical"
    description: str = "only one block of layers (bottom, middle or top third) and the head train (Lee et al. 2022)"
    space: TrainingSpace = field(default_factory=lambda: TrainingSpace(lr=(2e-5, 5e-4)))
    defaults: dict = field(default_factory=lambda: _defaults("surgical", 1e-4, block="top"))

    def search_space(self, trial):
        block = trial.suggest_categorical(key(self.name, "block"), list(BLOCKS))
        return {key(self.name, "block"): block, **suggest_training(trial, self.name, self.space)}

    def prepare(self, model, params):
        block = params[key(self.name, "block")]
        layers = len(model.layers)
        third = BLOCKS.index(block)
        chosen = range(third * layers // 3, max((third + 1) * layers // 3, third * layers // 3 + 1))
        trainable = [p for i in chosen for p in model.layers[i].parameters()] + model.head_parameters()
        return one_stage(trainable, read_training(self.name, params),
                         summary=f"layers {chosen.start}-{chosen.stop - 1} of {layers} + head train")


@dataclass
class BitFit:
    name: str = "bitfit"
    description: str = "only the bias terms of the encoder (and the head) train (Ben Zaken et al. 2022)"
    space: TrainingSpace = field(default_factory=lambda: TrainingSpace(lr=(1e-4, 5e-3), epochs=(3, 8)))
    defaults: dict = field(default_factory=lambda: {**_defaults("bitfit", 1e-3), "bitfit.epochs": 5})

    def search_space(self, trial):
        return suggest_training(trial, self.name, self.space)

    def prepare(self, model, params):
        biases = [p for n, p in model.encoder.named_parameters() if n.endswith("bias")]
        return one_stage(biases + model.head_parameters(), read_training(self.name, params),
                         summary=f"{len(biases)} bias vectors + head train")


def reinitialize(module, std: float) -> None:
    """BERT's initialization: linear/embedding weights ~ N(0, std), biases 0, LayerNorm 1/0."""
    import torch

    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
                m.weight.normal_(0.0, std)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()
            elif isinstance(m, torch.nn.LayerNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()


@dataclass
class ReinitTop:
    name: str = "reinit_top"
    description: str = "re-initialize the top k layers (and pooler), then fine-tune all (Zhang et al. 2021)"
    space: TrainingSpace = field(default_factory=lambda: TrainingSpace(lr=(1e-5, 1.5e-4), epochs=(3, 5)))
    defaults: dict = field(default_factory=lambda: _defaults("reinit_top", 5e-5, layers=1))

    def search_space(self, trial):
        n = trial.suggest_int(key(self.name, "layers"), 1, 3)
        return {key(self.name, "layers"): n, **suggest_training(trial, self.name, self.space)}

    def prepare(self, model, params):
        k = min(int(params[key(self.name, "layers")]), len(model.layers) - 1)
        std = getattr(model.config, "initializer_range", 0.02)
        for layer in model.layers[len(model.layers) - k:]:
            reinitialize(layer, std)
        if getattr(model.encoder, "pooler", None) is not None:
            reinitialize(model.encoder.pooler, std)
        return one_stage(model.parameters(), read_training(self.name, params),
                         summary=f"top {k}/{len(model.layers)} layers re-initialized")


@hookimpl
def autotl_strategies():
    return [FullFinetune(), Freeze(), Surgical(), BitFit(), ReinitTop()]
