"""autotl-peft: LoRA and IA3 strategies for autotl, merged into plain weights before export."""

from __future__ import annotations

import autotl
from autotl.strategy import TrainedStrategy, TrainingSpace, one_stage

__version__ = "0.1.0"

# "attention": peft's per-architecture default (BERT: query and value projections)
TARGETS = {"attention": None, "all_linear": "all-linear"}


class Merge:
    """Finalize step: fold the adapters into the weights they adapt, remove the adapters."""

    def __init__(self, tuner):
        self.tuner = tuner

    def __call__(self, model, score, chosen):
        self.tuner.merge_and_unload()
        return None


def _adapters(model, marker: str) -> list:
    return [p for n, p in model.encoder.named_parameters() if marker in n]


class Lora(TrainedStrategy):
    name = "lora"
    description = "low-rank adapters (Hu et al. 2022) + head; merged into the weights before export"
    space = TrainingSpace(lr=(1e-4, 3e-3), epochs=(2, 5), weight_decay=None)
    defaults = {"lora.rank": 8, "lora.alpha": 16, "lora.targets": "attention",
                "lora.lr": 5e-4, "lora.epochs": 3, "lora.batch_size": 32}

    def own_space(self, trial):
        return {self.key("rank"): trial.suggest_categorical(self.key("rank"), [4, 8, 16, 32]),
                self.key("alpha"): trial.suggest_categorical(self.key("alpha"), [8, 16, 32, 64]),
                self.key("targets"): trial.suggest_categorical(self.key("targets"), list(TARGETS))}

    def prepare(self, model, params):
        from peft import LoraConfig, LoraModel

        rank, alpha = int(params[self.key("rank")]), int(params[self.key("alpha")])
        targets = params[self.key("targets")]
        config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.1, target_modules=TARGETS[targets])
        tuner = LoraModel(model.encoder, config, "default")  # injects in place
        return one_stage(_adapters(model, "lora_") + model.head_parameters(), self.training(params),
                         finalize=Merge(tuner), summary=f"LoRA r={rank} alpha={alpha} on {targets}")


IA3_TARGETS = ("default", "keys_values")  # default: keys, values and the feed-forward output


class IA3(TrainedStrategy):
    name = "ia3"
    description = "IA3 rescaling vectors (Liu et al. 2022) + head; merged into the weights before export"
    space = TrainingSpace(lr=(1e-3, 3e-2), epochs=(2, 6), weight_decay=None)
    defaults = {"ia3.targets": "default", "ia3.lr": 5e-3, "ia3.epochs": 4, "ia3.batch_size": 32}

    def own_space(self, trial):
        return {self.key("targets"): trial.suggest_categorical(self.key("targets"), list(IA3_TARGETS))}

    def prepare(self, model, params):
        from peft import IA3Config, IA3Model
        from peft.utils import (TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FEEDFORWARD,
                                TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS_BY_TYPE)

        targets = params[self.key("targets")]
        kind = model.config.model_type
        if kind not in TARGETS_BY_TYPE:
            raise ValueError(f"peft has no IA3 defaults for model type '{kind}'")
        if targets == "default":
            config = IA3Config(target_modules=TARGETS_BY_TYPE[kind], feedforward_modules=FEEDFORWARD[kind])
        else:
            kv = [m for m in TARGETS_BY_TYPE[kind] if m not in FEEDFORWARD[kind]]
            config = IA3Config(target_modules=kv, feedforward_modules=[])
        tuner = IA3Model(model.encoder, config, "default")
        return one_stage(_adapters(model, "ia3_") + model.head_parameters(), self.training(params),
                         finalize=Merge(tuner), summary=f"IA3 on {targets.replace('_', ' ')}")


@autotl.hookimpl
def autotl_strategies():
    return [Lora(), IA3()]
