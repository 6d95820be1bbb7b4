"""Strategy conformance suite: the checks autotl runs over every registered strategy,
offered to plugin authors (like scikit-learn's ``check_estimator``).

Use it either way::

    from autotl.testing import check_strategy
    check_strategy(MyStrategy())              # raises AssertionError naming the failed check

    class TestMine(StrategyConformance):      # or as pytest tests, one per check
        @pytest.fixture
        def strategy(self):
            return MyStrategy()

Everything runs on a tiny BERT built from a config (no downloads, a few seconds on a CPU).
Training gets a few unlabeled rows too (`tiny_unlabeled`), for strategies whose stages read
them; a strategy that does not simply ignores them.
"""

from __future__ import annotations

import functools
import random
import tempfile
from pathlib import Path


POSITIVE = ["good", "great", "fine", "lovely", "superb", "nice"]
NEGATIVE = ["bad", "awful", "poor", "dull", "terrible", "weak"]
NEUTRAL = ["the", "movie", "film", "was", "plot", "acting", "really", "quite", "a", "story"]
LABELS = ("negative", "positive")


def make_tiny_backbone(path, *, hidden_size: int = 32, layers: int = 2, extra_words: tuple[str, ...] = (),
                       blind: bool = False) -> str:
    """Save a 2-layer, 32-wide BERT (or as given) and its WordPiece tokenizer under `path`
    (`extra_words` make its vocabulary, and so its tokenizer, another one's; `blind` leaves
    the sentiment words out of it, so `sentiment_rows` are all alike to it: a backbone that
    cannot transfer)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    sentiment = () if blind else (*POSITIVE, *NEGATIVE)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sentiment, *NEUTRAL, "neutral", *extra_words]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab=str(path / "vocab.txt"), do_lower_case=True).save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden_size, max_position_embeddings=64)
    BertModel(config).save_pretrained(path)
    return str(path)


def sentiment_rows(n: int, seed: int = 0, labels=LABELS) -> list[tuple[str, str]]:
    """Learnable rows: the label says which word list the text draws a word from."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = POSITIVE if label == labels[-1] else NEGATIVE
        rows.append((" ".join(rng.sample(NEUTRAL, 3) + [rng.choice(words)] + rng.sample(NEUTRAL, 2)), label))
    rng.shuffle(rows)
    return rows


@functools.lru_cache(maxsize=1)
def shared_backbone() -> str:
    """The tiny BERT every check in this process shares (built once, in a temp dir)."""
    return make_tiny_backbone(Path(tempfile.mkdtemp(prefix="autotl-tiny-")) / "bert")


def tiny_model(pooling: str = "mean", backbone: str | None = None):
    """A fresh TransferModel on the tiny BERT."""
    from .model import build_model

    return build_model(backbone or shared_backbone(), pooling, num_outputs=2, label_names=LABELS,
                       regression=False)


def tiny_setup(backbone: str | None = None, n: int = 24):
    """(train, val, settings) for the tiny BERT: encoded rows and CPU fit settings."""
    import numpy as np

    from .backbone import load_tokenizer
    from .batching import encode
    from .metrics import get_metric
    from .train import FitSettings

    path = backbone or shared_backbone()
    tokenizer = load_tokenizer(path)

    def enc(seed, name):
        rows = sentiment_rows(n, seed)
        targets = np.array([LABELS.index(label) for _, label in rows])
        return encode(tokenizer, [t for t, _ in rows], targets, 32, key=f"{path}:tiny:{name}:{n}")

    settings = FitSettings(metric=get_metric("accuracy", "classification"), regression=False,
                           pad_id=tokenizer.pad_token_id)
    return enc(0, "train"), enc(1, "val"), settings


def tiny_unlabeled(backbone: str | None = None, n: int = 24):
    """Encoded rows without labels (targets -1) for the tiny BERT: what strategies that learn
    from unlabeled rows (tapt, self_training) read through `Stage.start`."""
    import numpy as np

    from .backbone import load_tokenizer
    from .batching import encode

    path = backbone or shared_backbone()
    texts = [text for text, _ in sentiment_rows(n, seed=2)]
    return encode(load_tokenizer(path), texts, np.full(n, -1), 32, key=f"{path}:tiny:unlabeled:{n}")


def sampled_params(strategy, seed: int = 0) -> dict:
    """Params drawn from a real Optuna trial of `strategy.search_space`."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trial = study.ask()
    params = strategy.search_space(trial)
    assert params == trial.params, (
        f"{strategy.name}: search_space must return exactly what it suggested; "
        f"returned {sorted(params)} but suggested {sorted(trial.params)}")
    return params


def _quick(params: dict, name: str) -> dict:
    """Shorten training so checks stay fast: one epoch where the space has epochs."""
    return {k: (1 if k == f"{name}.epochs" else v) for k, v in params.items()}


class StrategyConformance:
    """The contract, one test per rule. Subclass and provide a `strategy` fixture."""

    def test_identity(self, strategy):
        assert isinstance(strategy.name, str) and strategy.name.isidentifier(), strategy.name
        assert isinstance(getattr(strategy, "description", None), str) and strategy.description
        # Empty defaults are fine for a strategy with nothing to search (the baseline recipe).
        assert isinstance(strategy.defaults, dict)
        head = getattr(strategy, "head", None)
        if head is not None:
            from .model import Pooling

            assert head in {p.value for p in Pooling}, f"{strategy.name}: fixed head {head!r} is not a Pooling"

    def test_params_are_namespaced(self, strategy):
        for seed in range(3):
            for k in sampled_params(strategy, seed):
                assert k.startswith(f"{strategy.name}."), f"{strategy.name}: key {k!r} is not namespaced"

    def test_fixed_trial_replays_the_space(self, strategy):
        import optuna

        for seed in range(3):
            params = sampled_params(strategy, seed)
            assert strategy.search_space(optuna.trial.FixedTrial(params)) == params

    def test_defaults_lie_in_the_space(self, strategy):
        import optuna

        replay = strategy.search_space(optuna.trial.FixedTrial(dict(strategy.defaults)))
        assert replay == strategy.defaults, f"{strategy.name}: defaults must cover exactly its default branch"
        study = optuna.create_study()
        study.enqueue_trial(dict(strategy.defaults))
        trial = study.ask()
        assert strategy.search_space(trial) == strategy.defaults, \
            f"{strategy.name}: a default lies outside its own search range"

    def test_plan_trains_something_of_the_model(self, strategy):
        from .strategy import Plan

        model = tiny_model()
        plan = strategy.prepare(model, dict(strategy.defaults))
        assert isinstance(plan, Plan), f"{strategy.name}: prepare() must return an autotl.Plan"
        own = {id(p) for p in model.parameters()}
        trained = [p for s in plan.stages for g in s.groups for p in g.params]
        assert trained, f"{strategy.name}: the plan trains no parameter"
        assert all(id(p) in own for p in trained), f"{strategy.name}: the plan trains weights outside the model"

    def test_forward_backward(self, strategy):
        from .train import fit

        train, val, settings = tiny_setup()
        fixed = getattr(strategy, "head", None)
        for pooling in (fixed,) if fixed else ("mean", "standard"):
            model = tiny_model(pooling)
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            plan = strategy.prepare(model, _quick(dict(strategy.defaults), strategy.name))
            result = fit(model, plan, train, val, settings, unlabeled=tiny_unlabeled())
            assert 0.0 <= result.best_score <= 1.0
            changed = [n for n, p in model.named_parameters() if not p.detach().equal(before[n])]
            assert changed, f"{strategy.name}/{pooling}: training changed no weight"

    def test_deterministic_under_a_seed(self, strategy):
        from .train import fit

        train, val, settings = tiny_setup()
        runs = []
        for _ in range(2):
            import torch

            torch.manual_seed(0)
            model = tiny_model()
            plan = strategy.prepare(model, _quick(dict(strategy.defaults), strategy.name))
            result = fit(model, plan, train, val, settings, unlabeled=tiny_unlabeled())
            runs.append((result.scores, [p.detach().clone() for p in model.parameters()]))
        assert runs[0][0] == runs[1][0], f"{strategy.name}: scores differ between two seeded runs"
        assert all(a.equal(b) for a, b in zip(runs[0][1], runs[1][1])), \
            f"{strategy.name}: weights differ between two seeded runs"


def check_strategy(strategy) -> None:
    """Run every conformance check on `strategy`; AssertionError names the failing one."""
    suite = StrategyConformance()
    for name in sorted(dir(suite)):
        if name.startswith("test_"):
            try:
                getattr(suite, name)(strategy)
            except Exception as exc:  # any failure is a broken rule; say which
                raise AssertionError(f"{getattr(strategy, 'name', strategy)!s}: {name}: "
                                     f"{type(exc).__name__}: {exc}") from exc


__all__ = ["StrategyConformance", "check_strategy", "make_tiny_backbone", "shared_backbone", "tiny_model", "tiny_setup",
           "tiny_unlabeled", "sampled_params", "sentiment_rows"]
