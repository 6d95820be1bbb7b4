"""autotl-peft: LoRA and IA3 strategies for autotl, merged into plain weights before export."""

from __future__ import annotations

from dataclasses import dataclass, field

import autotl
from autotl.strategy import TrainingSpace, key, one_stage, read_training, suggest_training

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


@dataclass
class Lora:
    name: str = "lora"
    description: str = "low-rank adapters (Hu et al. 2022) + head; merged into the weights before export"
    space: TrainingSpace = field(default_factory=lambda: TrainingSpace(lr=(1e-4, 3e-3), epochs=(2, 5),
                                                                       weight_decay=None))
    defaults: dict = field(default_factory=lambda: {
        "lora.rank": 8, "lora.alpha": 16, "lora.targets": "attention",
        "lora.lr": 5e-4, "lora.epochs": 3, "lora.batch_size": 32,
    })

    def search_space(self, trial):
        return {
            key(self.name, "rank"): trial.suggest_categorical(key(self.name, "rank"), [4, 8, 16, 32]),
            key(self.name, "alpha"): trial.suggest_categorical(key(self.name, "alpha"), [8, 16, 32, 64]),
            key(self.name, "targets"): trial.suggest_categorical(key(self.name, "targets"), list(TARGETS)),
            **suggest_training(trial, self.name, self.space),
        }

    def prepare(self, model, params):
        from peft import LoraConfig, LoraModel

        rank, alpha = int(params[key(self.name, "rank")]), int(params[key(self.name, "alpha")])
        targets = params[key(self.name, "targets")]
        config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.1, target_modules=TARGETS[targets])
        tuner = LoraModel(model.encoder, config, "default")  # injects in place
        return one_stage(_adapters(model, "lora_") + model.head_parameters(), read_training(self.name, params),
                         finalize=Merge(tuner), summary=f"LoRA r={rank} alpha={alpha} on {targets}")


IA3_TARGETS = ("default", "keys_values")  # default: keys, values and the feed-forward output


@dataclass
class IA3:
    name: str = "ia3"
    description: str = "IA3 rescaling vectors (Liu et al. 2022) + head; merged into the weights before export"
    space: TrainingSpace = field(default_factory=lambda: TrainingSpace(lr=(1e-3, 3e-2), epochs=(2, 6),
                                                                       weight_decay=None))
    defaults: dict = field(default_factory=lambda: {
        "ia3.targets": "default", "ia3.lr": 5e-3, "ia3.epochs": 4, "ia3.batch_size": 32,
    })

    def search_space(self, trial):
        targets = trial.suggest_categorical(key(self.name, "targets"), list(IA3_TARGETS))
        return {key(self.name, "targets"): targets, **suggest_training(trial, self.name, self.space)}

    def prepare(self, model, params):
        from peft import IA3Config, IA3Model
        from peft.utils import (TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FEEDFORWARD,
                                TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS_BY_TYPE)

        targets = params[key(self.name, "targets")]
        kind = model.config.model_type
        if kind not in TARGETS_BY_TYPE:
            raise ValueError(f"peft has no IA3 defaults for model type '{kind}'")
        if targets == "default":
            config = IA3Config(target_modules=TARGETS_BY_TYPE[kind], feedforward_modules=FEEDFORWARD[kind])
        else:
            kv = [m for m in TARGETS_BY_TYPE[kind] if m not in FEEDFORWARD[kind]]
            config = IA3Config(target_modules=kv, feedforward_modules=[])
        tuner = IA3Model(model.encoder, config, "default")
        return one_stage(_adapters(model, "ia3_") + model.head_parameters(), read_training(self.name, params),
                         finalize=Merge(tuner), summary=f"IA3 on {targets.replace('_', ' ')}")


@autotl.hookimpl
def autotl_strategies():
    return [Lora(), IA3()]
