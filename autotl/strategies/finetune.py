"""Fine-tuning families that differ in *which* weights train.

`full_finetune` (all), `freeze` (all but the embeddings and bottom k layers), `surgical`
(one block of layers: Lee et al. 2022), `bitfit` (only biases: Ben Zaken et al. 2022) and
`reinit_top` (all, after re-initializing the top k layers: Zhang et al. 2021). The new head
always trains.
"""

from __future__ import annotations

from ..hookspecs import hookimpl
from ..strategy import TrainedStrategy, TrainingSpace, namespaced, one_stage


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


class FullFinetune(TrainedStrategy):
    name = "full_finetune"
    description = "every weight trains (Devlin et al. 2019 recipe: AdamW, lr 2e-5..5e-5, 3 epochs)"
    # Up to 10 epochs: a few hundred rows need many passes (measured: benchmarks/portfolio.py).
    space = TrainingSpace(lr=(1e-5, 1.5e-4), epochs=(2, 10))
    defaults = _defaults("full_finetune", 5e-5)

    def prepare(self, model, params):
        return one_stage(model.parameters(), self.training(params), summary="all weights train")


class Freeze(TrainedStrategy):
    name = "freeze"
    description = "embeddings and the bottom k layers frozen, the rest fine-tuned; k searched"
    space = TrainingSpace(lr=(2e-5, 5e-4))
    defaults = _defaults("freeze", 1e-4, frozen_frac=0.67)

    def own_space(self, trial):
        # A fraction of the depth, not a layer count: the space is fixed before the
        # backbone is known, and means the same on 6-layer and 24-layer models.
        return {self.key("frozen_frac"): trial.suggest_float(self.key("frozen_frac"), 0.15, 0.9)}

    def prepare(self, model, params):
        k = _depth(model, float(params[self.key("frozen_frac")]))
        return one_stage(_trainable_above(model, 1 + k), self.training(params),
                         summary=f"embeddings + {k}/{len(model.layers)} layers frozen")


BLOCKS = ("bottom", "middle", "top")


class Surgical(TrainedStrategy):
    name = "surgical"
    description = "only one block of layers (bottom, middle or top third) and the head train (Lee et al. 2022)"
    space = TrainingSpace(lr=(2e-5, 5e-4))
    defaults = _defaults("surgical", 1e-4, block="top")

    def own_space(self, trial):
        return {self.key("block"): trial.suggest_categorical(self.key("block"), list(BLOCKS))}

    def prepare(self, model, params):
        layers = len(model.layers)
        third = BLOCKS.index(params[self.key("block")])
        chosen = range(third * layers // 3, max((third + 1) * layers // 3, third * layers // 3 + 1))
        trainable = [p for i in chosen for p in model.layers[i].parameters()] + model.head_parameters()
        return one_stage(trainable, self.training(params),
                         summary=f"layers {chosen.start}-{chosen.stop - 1} of {layers} + head train")


class BitFit(TrainedStrategy):
    name = "bitfit"
    description = "only the bias terms of the encoder (and the head) train (Ben Zaken et al. 2022)"
    space = TrainingSpace(lr=(1e-4, 5e-3), epochs=(3, 8))
    defaults = {**_defaults("bitfit", 1e-3), "bitfit.epochs": 5}

    def prepare(self, model, params):
        biases = [p for n, p in model.encoder.named_parameters() if n.endswith("bias")]
        return one_stage(biases + model.head_parameters(), self.training(params),
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


class ReinitTop(TrainedStrategy):
    name = "reinit_top"
    description = "re-initialize the top k layers (and pooler), then fine-tune all (Zhang et al. 2021)"
    space = TrainingSpace(lr=(1e-5, 1.5e-4), epochs=(3, 5))
    defaults = _defaults("reinit_top", 5e-5, layers=1)

    def own_space(self, trial):
        return {self.key("layers"): trial.suggest_int(self.key("layers"), 1, 3)}

    def prepare(self, model, params):
        k = min(int(params[self.key("layers")]), len(model.layers) - 1)
        std = getattr(model.config, "initializer_range", 0.02)
        for layer in model.layers[len(model.layers) - k:]:
            reinitialize(layer, std)
        if getattr(model.encoder, "pooler", None) is not None:
            reinitialize(model.encoder.pooler, std)
        return one_stage(model.parameters(), self.training(params),
                         summary=f"top {k}/{len(model.layers)} layers re-initialized")


@hookimpl
def autotl_strategies():
    return [FullFinetune(), Freeze(), Surgical(), BitFit(), ReinitTop()]
