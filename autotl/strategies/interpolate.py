"""`wise_ft` (Wortsman et al. 2022): fine-tune, then interpolate the encoder between its
pretrained and fine-tuned weights, w = (1 - a) w0 + a w_ft, with the mixing weight a
chosen on the validation split (a = 1 is plain fine-tuning, so it never loses on val).
The fine-tuned head is kept: the pretrained model has none to interpolate with.
"""

from __future__ import annotations

from ..hookspecs import hookimpl
from ..strategy import TrainedStrategy, TrainingSpace, one_stage, snapshot

ALPHAS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class Interpolate:
    """Finalize step: try each alpha on validation, keep the best (ties go to larger alpha,
    the one closer to plain fine-tuning)."""

    def __init__(self, model, alphas=ALPHAS):
        self.start = snapshot(model.encoder_parameters())
        self.alphas = alphas

    def __call__(self, model, score, chosen):
        tuned = snapshot(model.encoder_parameters())
        if score is None:  # refit: no validation rows left to choose with
            self._mix(model, tuned, float(chosen["alpha"]) if chosen else 1.0)
            return chosen
        best = None
        for alpha in self.alphas:
            self._mix(model, tuned, alpha)
            value = score()
            if best is None or value >= best[0]:
                best = (value, alpha)
        self._mix(model, tuned, best[1])
        return {"alpha": best[1]}

    def _mix(self, model, tuned, alpha: float) -> None:
        import torch

        with torch.no_grad():
            for p, w0, w1 in zip(model.encoder_parameters(), self.start, tuned):
                p.copy_(w0.to(p.device) * (1 - alpha) + w1 * alpha)


class WiseFT(TrainedStrategy):
    name = "wise_ft"
    description = "fine-tune, then interpolate with the pretrained weights; mix chosen on validation (Wortsman et al. 2022)"
    space = TrainingSpace(lr=(1e-5, 1.5e-4))
    defaults = {"wise_ft.lr": 5e-5, "wise_ft.epochs": 3, "wise_ft.batch_size": 32, "wise_ft.weight_decay": 0.01}

    def prepare(self, model, params):
        return one_stage(model.parameters(), self.training(params), finalize=Interpolate(model),
                         summary="fine-tune, then weight interpolation")


@hookimpl
def autotl_strategies():
    return [WiseFT()]
