"""`baseline`: the hand recipe autotl replaces, as a trial like any other.

What a user would run without autotl: the backbone's own sequence-classification head,
every weight fine-tuned with the Hugging Face `Trainer`'s defaults — AdamW at lr 5e-5, a
linear decay with no warmup, no weight decay, batch 32, 3 epochs. It has nothing to search
and always uses the standard head, so every leaderboard answers "was the search worth it?"
and the report states the winner's margin over it.
"""

from __future__ import annotations

from ..hookspecs import hookimpl
from ..strategy import Training, one_stage

RECIPE = Training(lr=5e-5, epochs=3, batch_size=32, weight_decay=0.0)


class Baseline:
    name = "baseline"
    description = ("the hand recipe: the model's own classification head, full fine-tune, "
                   "lr 5e-5, 3 epochs, batch 32, no warmup, no weight decay (HF Trainer defaults)")
    head = "standard"  # fixed: the recipe uses the architecture's own head, never searched
    defaults: dict = {}  # nothing to choose

    def search_space(self, trial):
        return {}

    def prepare(self, model, params):
        return one_stage(model.parameters(), RECIPE, warmup_ratio=0.0,
                         summary="the hand recipe (lr 5e-5, 3 epochs, batch 32)")


@hookimpl
def autotl_strategies():
    return [Baseline()]
