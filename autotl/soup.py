"""Greedy model soups (Wortsman et al. 2022): average the weights of fine-tunes that share a
head, adding each only if the averaged model does not validate worse.

Fine-tunes of one pretrained model tend to lie in one basin of the loss, so their weight
average is often better than any of them, at the cost of one model at inference (an
ensemble costs one per member). Greedy, not uniform: a model from another basin would
break the average, and validation tells which. The candidates are the trial models kept
by `candidates.py`; only one running float32 sum and one candidate are in memory at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from . import candidates
from .objective import BACKBONE

log = logging.getLogger("autotl")


@dataclass(frozen=True)
class Soup:
    """A greedy soup that validates better than the model it started from."""

    members: tuple[int, ...]  # trial numbers averaged; the first is the trial the soup started from
    score: float  # validation score of the averaged model
    base_score: float  # validation score of the first member alone (the same evaluation)
    predictions: np.ndarray  # the averaged model's predictions on the validation rows
    threshold: float | None = None  # multi-label: the averaged model's decision threshold, tuned on validation


def average_states(states: list[dict]) -> dict:
    """The uniform average of state dicts with the same keys: float tensors averaged in
    float32 and cast back to the first state's dtype; other tensors (e.g. position ids)
    taken from the first."""
    if not states:
        raise ValueError("average_states needs at least one state dict, got none")
    first = states[0]
    for i, other in enumerate(states[1:], start=1):
        _check_same_keys(first, other, f"state {i}")
    out = {}
    for key, value in first.items():
        if not value.is_floating_point():
            out[key] = value
            continue
        total = value.to(torch.float32, copy=True)
        for other in states[1:]:
            total += other[key].to(device=total.device, dtype=torch.float32)
        out[key] = (total / len(states)).to(value.dtype)
    return out


def _check_same_keys(first: dict, other: dict, name: str) -> None:
    missing, extra = sorted(first.keys() - other.keys()), sorted(other.keys() - first.keys())
    if missing or extra:
        what = f"lacks '{missing[0]}'" if missing else f"has '{extra[0]}', which the first state lacks"
        raise ValueError(f"state dicts must have the same keys to be averaged, but {name} {what} "
                         f"({len(missing)} missing, {len(extra)} extra)")
    for key, value in first.items():
        if other[key].shape != value.shape:
            raise ValueError(f"state dicts must have the same shapes to be averaged, but '{key}' is "
                             f"{tuple(value.shape)} in the first state and {tuple(other[key].shape)} in {name}")


def fresh_model(setup, head: str):
    """A new TransferModel of the search's backbone with `head` (weights to be loaded)."""
    from .model import build_model

    return build_model(setup.backbone_path, head, num_outputs=setup.num_outputs, label_names=setup.label_names,
                       regression=setup.fit.regression, target_mean=setup.target_mean,
                       multi_label=setup.fit.multilabel)


def soup_model(setup, head: str, states: list[dict]):
    """A fresh model with `head` holding the average of `states` (loaded strictly), in eval
    mode on the CPU: the soup to evaluate or export (also a soup of refit models)."""
    model = fresh_model(setup, head)
    model.load_state_dict(average_states(states), strict=True)
    return model.eval()


def greedy_soup(setup, run_dir, first: int) -> Soup | None:
    """The greedy soup that starts from trial `first`'s kept model.

    The other kept models with its head are tried best stored score first; each joins if
    the average with it validates (on `setup.val`) no worse than the soup so far. Returns
    the soup only if it has more than one member and validates strictly better than
    `first` alone; None otherwise, or when `first`'s model is not kept.
    """
    if setup.val is None:
        raise ValueError("greedy_soup needs validation rows (setup.val is None: a refit setup?)")
    kept = {c["trial"]: c for c in candidates.listing(run_dir)}
    start = kept.get(first)
    if start is None:
        log.info("no soup: trial %d's model is not among the kept candidates", first)
        return None
    sign = 1 if setup.fit.metric.maximize else -1
    backbone = (start.get("params") or {}).get(BACKBONE)
    setup = setup.for_params(start.get("params") or {})  # ingredients share its backbone and head
    others = sorted((c for c in kept.values() if c["head"] == start["head"] and c["trial"] != first
                     and (c.get("params") or {}).get(BACKBONE) == backbone),
                    key=lambda c: (-sign * c["score"], c["trial"]))
    if not others:
        log.info("no soup: trial %d is the only kept model with the %s head", first, start["head"])
        return None

    model = fresh_model(setup, start["head"]).to(setup.fit.device)
    mix = _RunningMean(candidates.load_state(start["path"]))
    base = _evaluate(setup, mix.load_into(model))
    members, best = [first], base
    for c in others:
        try:
            state = candidates.load_state(c["path"])
            _check_same_keys(mix.sums, state, f"trial {c['trial']}'s state")
        except (OSError, ValueError) as exc:  # unreadable, or a model of another shape: cannot join
            log.debug("soup: skipping trial %d: %s", c["trial"], exc)
            continue
        tried = _evaluate(setup, mix.load_into(model, extra=state))
        if sign * tried.score >= sign * best.score:
            mix.add(state)
            members.append(c["trial"])
            best = tried
        del state
    metric = setup.fit.metric.name
    if len(members) > 1 and sign * best.score > sign * base.score:
        log.info("greedy soup of trials %s: %s %.4f, vs %.4f for trial %d alone",
                 ", ".join(map(str, members)), metric, best.score, base.score, first)
        return Soup(tuple(members), best.score, base.score, best.predictions, best.threshold)
    log.info("no soup: averaging trial %d with the other %d kept %s-head model(s) did not beat its %s %.4f",
             first, len(others), start["head"], metric, base.score)
    return None


def _evaluate(setup, model):
    """`train.Scored` of `model` on the validation rows (score, predictions, multi-label threshold)."""
    from .train import validate

    return validate(model, setup.val, setup.fit)


class _RunningMean:
    """The float32 sum of the members' weights so far (non-float tensors: the first's)."""

    def __init__(self, first: dict):
        self.sums = {k: v.to(torch.float32, copy=True) if v.is_floating_point() else v for k, v in first.items()}
        self.count = 1

    def add(self, state: dict) -> None:
        for key, total in self.sums.items():
            if total.is_floating_point():
                total += state[key].to(torch.float32)
        self.count += 1

    def load_into(self, model, extra: dict | None = None):
        """Write the mean (with `extra` as one more member) into `model`'s tensors in place,
        one tensor at a time (no second full copy of the weights)."""
        count = self.count + (extra is not None)
        own = model.state_dict()  # views of the model's own tensors: copy_ writes the weights
        _check_same_keys(own, self.sums, "the kept state")
        with torch.no_grad():
            for key, total in self.sums.items():
                target = own[key]
                if not total.is_floating_point():
                    target.copy_(total)
                elif extra is None:
                    target.copy_(total / count)
                else:
                    target.copy_((total + extra[key].to(torch.float32)) / count)
        return model.eval()
