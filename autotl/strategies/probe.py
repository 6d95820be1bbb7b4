"""Head-first families: `linear_probe` (the encoder never trains) and `lp_ft` (probe, then
fine-tune everything from that head: Kumar et al. 2022).

While the whole encoder is frozen, the loop computes the head's input features once per
search (`autotl.features`) and trains the head on them: a probe costs seconds, and LP-FT's
first stage is nearly free.
"""

from __future__ import annotations

from ..hookspecs import hookimpl
from ..strategy import ParamGroup, Plan, Stage, TrainedStrategy, TrainingSpace, one_stage


class LinearProbe(TrainedStrategy):
    name = "linear_probe"
    description = "encoder frozen, only the head trains (features computed once per search)"
    space = TrainingSpace(lr=(1e-3, 5e-2), epochs=(10, 40), batch_sizes=(32, 64), weight_decay=(0.0, 0.01))
    defaults = {"linear_probe.lr": 1e-2, "linear_probe.epochs": 25,
                "linear_probe.batch_size": 32, "linear_probe.weight_decay": 0.0}

    def prepare(self, model, params):
        return one_stage(model.head_parameters(), self.training(params), warmup_ratio=0.0, summary="head only")


class LPFT(TrainedStrategy):
    name = "lp_ft"
    description = "linear probe first, then fine-tune everything from that head (Kumar et al. 2022)"
    space = TrainingSpace(lr=(1e-5, 1e-4), epochs=(2, 4))
    defaults = {"lp_ft.probe_lr": 1e-2, "lp_ft.probe_epochs": 10, "lp_ft.lr": 3e-5, "lp_ft.epochs": 3,
                "lp_ft.batch_size": 32, "lp_ft.weight_decay": 0.01}

    def own_space(self, trial):
        return {self.key("probe_lr"): trial.suggest_float(self.key("probe_lr"), 1e-3, 5e-2, log=True),
                self.key("probe_epochs"): trial.suggest_int(self.key("probe_epochs"), 5, 20)}

    def prepare(self, model, params):
        t = self.training(params)
        probe = Stage((ParamGroup(tuple(model.head_parameters()), float(params[self.key("probe_lr")])),),
                      int(params[self.key("probe_epochs")]))
        # Kumar et al.: fine-tuning from a good head distorts pretrained features less,
        # so the second stage uses a small learning rate for everything.
        tune = Stage((ParamGroup(tuple(model.parameters()), t.lr, t.weight_decay),), t.epochs)
        return Plan((probe, tune), batch_size=t.batch_size, summary="probe, then all weights")


@hookimpl
def autotl_strategies():
    return [LinearProbe(), LPFT()]
