"""Fine-tune everything with a penalty added to the loss.

- `l2sp` (Li et al. 2018): alpha/2 ||w - w0||^2 over the encoder (pull to the *pretrained*
  weights) + beta/2 ||w||^2 over the new head.
- `l1`, `l2`: the seed article's penalties lambda * sum|w| and lambda * sum w^2 over every
  weight (pull toward *zero*: sparsity, small weights).
- `bss` (Chen et al. 2019): eta * sum of the k smallest squared singular values of the
  batch's feature matrix, shrinking the directions that carry untransferable noise.
- `delta` (Li et al. 2019): alpha * ||f(x) - f0(x)||^2, the distance between the features
  the head reads and the frozen pretrained encoder's; f0 comes from the feature cache (the
  same entries the probes use). A simplification of DELTA: pooled features, no per-channel
  attention weights.
"""

from __future__ import annotations

import contextlib

from ..hookspecs import hookimpl
from ..strategy import TrainedStrategy, TrainingSpace, namespaced, one_stage, snapshot


class L2SPPenalty:
    """alpha/2 * sum((w - w0)^2) over `anchored` + beta/2 * sum(w^2) over `free`."""

    def __init__(self, anchored, free, alpha: float, beta: float):
        self.anchored = list(anchored)
        self.start = snapshot(self.anchored)  # w0: the pretrained weights
        self.free = list(free)
        self.alpha, self.beta = alpha, beta

    def __call__(self, model, step=None):
        pull = sum(((p - p0) ** 2).sum() for p, p0 in zip(self.anchored, self.start))
        decay = sum((p ** 2).sum() for p in self.free)
        return 0.5 * self.alpha * pull + 0.5 * self.beta * decay


class NormPenalty:
    """strength * sum(|w|^p) over `params`: p=1 is L1 (lasso), p=2 is L2 (ridge)."""

    def __init__(self, params, strength: float, power: int):
        self.params, self.strength, self.power = list(params), strength, power

    def __call__(self, model, step=None):
        if self.power == 1:
            return self.strength * sum(p.abs().sum() for p in self.params)
        return self.strength * sum((p * p).sum() for p in self.params)


class BSSPenalty:
    """eta * sum of the k smallest squared singular values of the batch features."""

    def __init__(self, eta: float, k: int):
        self.eta, self.k = eta, k

    def __call__(self, model, step):
        import torch

        if step is None or step.features is None:
            raise ValueError("bss needs the head's input features; this model's head cannot be split")
        singular = torch.linalg.svdvals(step.features.float())  # descending
        return self.eta * (singular[-self.k:] ** 2).sum()


class DeltaPenalty:
    """alpha * mean over the batch of ||f(x) - f0(x)||^2, f0 from the frozen pretrained copy."""

    def __init__(self, model, alpha: float):
        import copy

        self.teacher = copy.deepcopy(model).eval()  # the pretrained encoder, never trained
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.alpha = alpha
        self.targets = {}  # data key -> teacher features (looked up in the shared cache once)

    def __call__(self, model, step):
        import torch

        from ..features import CACHE

        if step is None or step.features is None:
            raise ValueError("delta needs the head's input features; this model's head cannot be split")
        device = step.features.device
        if step.data.key not in self.targets:
            self.teacher.to(device)
            self.targets[step.data.key] = CACHE.features(self.teacher, step.data, pad_id=step.pad_id,
                                                         device=str(device), autocast=contextlib.nullcontext)
            self.teacher.to("cpu")
        reference = self.targets[step.data.key][torch.as_tensor(step.rows)].to(device)
        return self.alpha * ((step.features.float() - reference) ** 2).sum(dim=1).mean()


def _defaults(name: str, **extra) -> dict:
    return namespaced(name, **extra, lr=5e-5, epochs=3, batch_size=32)


_SPACE = TrainingSpace(lr=(1e-5, 1.5e-4), weight_decay=None)  # the penalty is the regularizer


class L2SP(TrainedStrategy):
    name = "l2sp"
    description = "full fine-tune with an L2-SP pull toward the pretrained weights; strength searched"
    space = _SPACE
    defaults = _defaults("l2sp", alpha=0.01, beta=1e-4)

    def own_space(self, trial):
        return {self.key("alpha"): trial.suggest_float(self.key("alpha"), 1e-4, 1.0, log=True),
                self.key("beta"): trial.suggest_float(self.key("beta"), 1e-5, 1e-2, log=True)}

    def prepare(self, model, params):
        penalty = L2SPPenalty(model.encoder_parameters(), model.head_parameters(),
                              float(params[self.key("alpha")]), float(params[self.key("beta")]))
        return one_stage(model.parameters(), self.training(params), penalty=penalty,
                         summary=f"L2-SP alpha={penalty.alpha:.2g}")


class Norm(TrainedStrategy):
    """`l2` (and, subclassed, `l1`): lambda * sum|w|^p over every weight."""

    power = 2
    name = "l2"
    description = "full fine-tune + lambda * sum(w^2): pulls weights toward zero"
    strength = (1e-7, 1e-4)  # sum(w^2) of a 22M-weight MiniLM is ~3e4
    space = _SPACE
    defaults = _defaults("l2", strength=1e-6)

    def own_space(self, trial):
        return {self.key("strength"): trial.suggest_float(self.key("strength"), *self.strength, log=True)}

    def prepare(self, model, params):
        lam = float(params[self.key("strength")])
        return one_stage(model.parameters(), self.training(params),
                         penalty=NormPenalty(model.parameters(), lam, self.power), summary=f"lambda={lam:.2g}")


class L1(Norm):
    power = 1
    name = "l1"
    description = "full fine-tune + lambda * sum|w|: pulls weights toward zero, sparsely"
    strength = (1e-8, 1e-5)
    defaults = _defaults("l1", strength=1e-7)


class BSS(TrainedStrategy):
    name = "bss"
    description = "full fine-tune + batch spectral shrinkage of the smallest feature singular values (Chen et al. 2019)"
    space = _SPACE
    defaults = _defaults("bss", eta=1e-3, k=1)

    def own_space(self, trial):
        return {self.key("eta"): trial.suggest_float(self.key("eta"), 1e-4, 1e-1, log=True),
                self.key("k"): trial.suggest_int(self.key("k"), 1, 4)}

    def prepare(self, model, params):
        eta, k = float(params[self.key("eta")]), int(params[self.key("k")])
        return one_stage(model.parameters(), self.training(params), penalty=BSSPenalty(eta, k),
                         summary=f"BSS eta={eta:.2g} k={k}")


class Delta(TrainedStrategy):
    name = "delta"
    description = "full fine-tune + pull of the head's input features toward the pretrained encoder's (Li et al. 2019)"
    space = _SPACE
    defaults = _defaults("delta", alpha=0.01)

    def own_space(self, trial):
        return {self.key("alpha"): trial.suggest_float(self.key("alpha"), 1e-4, 1.0, log=True)}

    def prepare(self, model, params):
        alpha = float(params[self.key("alpha")])
        return one_stage(model.parameters(), self.training(params),
                         penalty=DeltaPenalty(model, alpha), summary=f"feature pull alpha={alpha:.2g}")


@hookimpl
def autotl_strategies():
    return [L2SP(), BSS(), Delta(), L1(), Norm()]
