"""The model a trial trains: a pretrained encoder plus a classification head.

Two heads, chosen by the search (`head.pooling`):
- ``standard``: the architecture's own sequence-classification head (BERT: pooler on the
  first token, dropout, linear). Saved as a plain ``AutoModelForSequenceClassification``,
  so ``transformers.pipeline`` loads the exported model directly.
- ``mean``: mean over the non-padding tokens, dropout, linear. Best on sentence-embedding
  backbones trained with mean pooling (all-MiniLM-L6-v2); only autotl's loader knows it.

Where the architecture lets us split it (BERT-style: pooler + dropout + classifier), the
forward pass is ``head(features(inputs))`` so that a frozen encoder's features can be
cached (`features.py`) and penalties can see them. Where the encoder is BERT-like, the
forward pass can also start part-way up (`embed`, `run_layers`, `pool`), so that the hidden
states below a frozen depth are computed once for a whole search (`activations.py`).
"""

from __future__ import annotations

import enum

import torch
from torch import nn


class Pooling(str, enum.Enum):
    """How the head reads the encoder's output."""

    STANDARD = "standard"  # the architecture's own head (BERT: pooler on [CLS]); pipeline-loadable
    MEAN = "mean"  # masked mean over tokens + linear; autotl's loader only


class MeanPoolHead(nn.Module):
    """Dropout and a linear layer on mean-pooled token states."""

    def __init__(self, hidden_size: int, num_outputs: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(features))


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token states where attention_mask is 1."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


# Encoders whose layers are called as layer(hidden, 4-D mask) and whose embeddings module
# turns ids into the first layer's input: the BERT family in transformers 5.
LAYER_CACHE_MODEL_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "electra", "camembert"})


def _find_layers(encoder: nn.Module, count: int) -> nn.ModuleList:
    # Architectures name their layer stack differently (encoder.layer, transformer.layer,
    # layers); the stack is the ModuleList with one entry per configured layer.
    for module in encoder.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise ValueError(f"cannot find the {count} transformer layers of {type(encoder).__name__}")


class TransferModel(nn.Module):
    """Encoder + head, with the handles strategies need (blocks, head parameters)."""

    # the pretrained backbone directory it was built from (`build_model` sets it; TAPT adapts
    # that backbone's masked-LM form); "" when built otherwise
    backbone_path: str = ""

    def __init__(self, pooling: Pooling, *, net: nn.Module | None = None,
                 encoder: nn.Module | None = None, head: nn.Module | None = None):
        super().__init__()
        self.pooling = Pooling(pooling)
        if self.pooling is Pooling.STANDARD:
            self.net = net  # AutoModelForSequenceClassification
        else:
            self.encoder_ = encoder
            self.head_ = head
        config = self.encoder.config
        # A handle, not a registered submodule: the layers already belong to the encoder, and
        # a second registration would list every layer weight twice in state_dict().
        object.__setattr__(self, "layers", _find_layers(self.encoder, config.num_hidden_layers))
        # BERT-style standard heads can be split at the pooler output; others run whole.
        self.splittable = self.pooling is Pooling.MEAN or (
            getattr(self.encoder, "pooler", None) is not None
            and isinstance(getattr(net, "classifier", None), nn.Linear)
            and isinstance(getattr(net, "dropout", None), nn.Dropout)
        )

    @property
    def encoder(self) -> nn.Module:
        """The pretrained transformer (without any classification head)."""
        return self.net.base_model if self.pooling is Pooling.STANDARD else self.encoder_

    @property
    def config(self):
        return self.encoder.config

    def head_modules(self) -> list[nn.Module]:
        """Modules that belong to the head and are new (not pretrained)."""
        if self.pooling is Pooling.MEAN:
            return [self.head_]
        base = self.encoder
        return [m for name, m in self.net.named_children() if m is not base]

    def output_layer(self) -> nn.Linear:
        """The head's last linear layer (the one that produces the outputs)."""
        return [m for head in self.head_modules() for m in head.modules() if isinstance(m, nn.Linear)][-1]

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.head_modules() for p in m.parameters()]

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def outside_blocks(self) -> list[nn.Parameter]:
        """Parameters in no block: the head, and a pooler above the layers."""
        inside = {id(p) for block in self.blocks() for p in block.parameters()}
        return [p for p in self.parameters() if id(p) not in inside]

    def blocks(self) -> list[nn.Module]:
        """Bottom-up: the embeddings, then each transformer layer."""
        return [self._embeddings(), *self.layers]

    def _embeddings(self) -> nn.Module:
        # BERT-likes keep position/type embeddings and LayerNorm beside the word table in
        # `.embeddings`; fall back to the word table alone.
        return getattr(self.encoder, "embeddings", None) or self.encoder.get_input_embeddings()

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """What the head reads: mean-pooled states, or the pooler output (standard head)."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, return_dict=True,
                           **_segments(token_type_ids))
        if self.pooling is Pooling.MEAN:
            return mean_pool(out.last_hidden_state, attention_mask)
        return out.pooler_output

    def head(self, features: torch.Tensor) -> torch.Tensor:
        if self.pooling is Pooling.MEAN:
            return self.head_(features)
        return self.net.classifier(self.net.dropout(features))

    @property
    def layer_cacheable(self) -> bool:
        """Whether the forward pass can start from cached hidden states part-way up."""
        config = self.config
        return (self.splittable and config.model_type in LAYER_CACHE_MODEL_TYPES
                and not config.is_decoder and getattr(self.encoder, "embeddings", None) is not None)

    def frozen_depth(self) -> int:
        """Transformer layers frozen, from the bottom, together with the embeddings; -1 when
        the embeddings themselves train."""
        depth = -1
        for block in self.blocks():
            if any(p.requires_grad for p in block.parameters()):
                break
            depth += 1
        return depth

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The first layer's input (word + position + type embeddings, normalized)."""
        return self.encoder.embeddings(input_ids=input_ids, **_segments(token_type_ids))

    def run_layers(self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int,
                   stop: int | None = None) -> torch.Tensor:
        """Hidden states after layers[start:stop], given the states entering layer `start`."""
        from transformers.masking_utils import create_bidirectional_mask

        mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=attention_mask)
        for layer in self.layers[start:stop]:
            out = layer(hidden, mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """What the head reads, from the last layer's states (as `features` computes it)."""
        if self.pooling is Pooling.MEAN:
            return mean_pool(hidden, attention_mask)
        return self.encoder.pooler(hidden)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs for a batch; `token_type_ids` only for text pairs (batching.model_inputs)."""
        if not self.splittable:
            return self.net(input_ids=input_ids, attention_mask=attention_mask, **_segments(token_type_ids)).logits
        return self.head(self.features(input_ids, attention_mask, token_type_ids))


def _segments(token_type_ids: torch.Tensor | None) -> dict:
    # Passed only when given: encoders without token types (DistilBERT) refuse the argument.
    return {} if token_type_ids is None else {"token_type_ids": token_type_ids}


def build_model(backbone_path: str, pooling: Pooling, *, num_outputs: int,
                label_names: tuple[str, ...], regression: bool, target_mean: float = 0.0,
                multi_label: bool = False, tasks: tuple = ()) -> TransferModel:
    """Fresh pretrained encoder + new head, labels written into the config.

    For regression the output bias starts at the training targets' mean: a head that starts
    near 0 for targets near, say, 3 spends its first epochs (and large gradients through the
    encoder) just learning the offset. `multi_label`: one independent (sigmoid) output per
    label; the config says so (problem_type), so `transformers.pipeline` applies a sigmoid too.
    `tasks` (multitask.TaskSpec): one head per task on mean-pooled features (multitask.py).
    """
    model = _build(backbone_path, pooling, num_outputs=num_outputs, label_names=label_names,
                   regression=regression, multi_label=multi_label, tasks=tasks)
    model.backbone_path = str(backbone_path)
    if regression and not tasks:
        with torch.no_grad():
            model.output_layer().bias.fill_(target_mean)
    return model


def _build(backbone_path: str, pooling: Pooling, *, num_outputs: int,
           label_names: tuple[str, ...], regression: bool, multi_label: bool, tasks: tuple = ()) -> TransferModel:
    from .backbone import load_pretrained

    pooling = Pooling(pooling)
    if tasks and pooling is not Pooling.MEAN:
        raise ValueError(f"a multi-task model has autotl's own mean-pooled heads, not the '{pooling.value}' head")
    labels = {"num_labels": num_outputs}
    if regression:
        labels["problem_type"] = "regression"
    else:
        labels["id2label"] = dict(enumerate(label_names))
        labels["label2id"] = {name: i for i, name in enumerate(label_names)}
        labels["problem_type"] = "multi_label_classification" if multi_label else "single_label_classification"
    if pooling is Pooling.STANDARD:
        return TransferModel(pooling, net=load_pretrained(backbone_path, standard_head=True, **labels))
    encoder = load_pretrained(backbone_path, standard_head=False, **labels)
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None  # unused by mean pooling: keep it out of training and export
    config = encoder.config
    dropout = getattr(config, "classifier_dropout", None)
    if dropout is None:
        dropout = getattr(config, "hidden_dropout_prob", 0.1)
    if tasks:
        from .multitask import build_head

        return TransferModel(pooling, encoder=encoder, head=build_head(config.hidden_size, tasks, dropout))
    head = MeanPoolHead(config.hidden_size, num_outputs, dropout)
    return TransferModel(pooling, encoder=encoder, head=head)
