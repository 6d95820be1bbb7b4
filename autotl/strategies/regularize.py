"""`l2sp`: fine-tune everything, penalized toward the pretrained weights (Li et al. 2018).

Loss + alpha/2 * ||w - w0||^2 over the pretrained encoder + beta/2 * ||w||^2 over the new
head. Plain weight decay pulls toward zero and forgets what pretraining learned; L2-SP
pulls toward the starting point instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..hookspecs import hookimpl
from ..strategy import ParamGroup, Plan, Stage, TrainingSpace, key, read_training, suggest_training


class L2SPPenalty:
    """alpha/2 * sum((w - w0)^2) over `anchored` + beta/2 * sum(w^2) over `free`."""

    def __init__(self, anchored, free, alpha: float, beta: float):
        self.anchored = list(anchored)
        self.start = [p.detach().clone() for p in self.anchored]  # w0: the pretrained weights
        self.free = list(free)
        self.alpha, self.beta = alpha, beta

    def __call__(self, model, features=None):
        pull = sum(((p - p0) ** 2).sum() for p, p0 in zip(self.anchored, self.start))
        decay = sum((p ** 2).sum() for p in self.free)
        return 0.5 * self.alpha * pull + 0.5 * self.beta * decay


@dataclass
class L2SP:
    name: str = "l2sp"
    description: str = "full fine-tune with an L2-SP pull toward the pretrained weights; strength searched"
    space: TrainingSpace = field(default_factory=lambda: TrainingSpace(
        lr=(1e-5, 1.5e-4), weight_decay=None))
    defaults: dict = field(default_factory=lambda: {
        "l2sp.alpha": 0.01, "l2sp.beta": 1e-4, "l2sp.lr": 5e-5, "l2sp.epochs": 3,
        "l2sp.batch_size": 32,
    })

    def search_space(self, trial):
        return {
            key(self.name, "alpha"): trial.suggest_float(key(self.name, "alpha"), 1e-4, 1.0, log=True),
            key(self.name, "beta"): trial.suggest_float(key(self.name, "beta"), 1e-5, 1e-2, log=True),
            **suggest_training(trial, self.name, self.space),
        }

    def prepare(self, model, params):
        t = read_training(self.name, params)
        penalty = L2SPPenalty(model.encoder_parameters(), model.head_parameters(),
                              float(params[key(self.name, "alpha")]), float(params[key(self.name, "beta")]))
        group = ParamGroup(tuple(model.parameters()), t.lr, t.weight_decay)
        return Plan((Stage((group,), t.epochs, penalty=penalty),), batch_size=t.batch_size,
                    summary=f"L2-SP alpha={penalty.alpha:.2g}")


@hookimpl
def autotl_strategies():
    return [L2SP()]
