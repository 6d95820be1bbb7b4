"""ONNX: RUN_DIR/best/model.onnx for either head, and predictions from it with onnxruntime.

The graph takes the tokenizer's tensors (input_ids, attention_mask, and token_type_ids
where the tokenizer makes them) and returns the logits; the mean-pooled head's pooling is
inside it. Batch and sequence axes are dynamic.

Exporter: ``torch.onnx.export(dynamo=True)``, the torch.export-based one. The legacy
TorchScript exporter works on these models too, exports about 4x faster and its graph ran
~10% faster in onnxruntime (onnxruntime fuses its GELU, not the new exporter's), but it is
deprecated since torch 2.9 and it traces: Python conditions on tensors (transformers'
mask code has some) are frozen to the example's values with only a TracerWarning, so a
transformers release could make it silently wrong. torch.export captures those soundly or
fails. Opset 18: the exporter's own (torchlib's) opset, so no version conversion runs.

Every export is checked before it is published: onnxruntime's logits must match autotl's
own PyTorch forward pass within `TOLERANCE` on example rows of other lengths and another
batch size than those exported with. model.onnx is written beside best/, then renamed in under `best_lock`, and
only while best/ still holds the model it came from.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError, UsageError

log = logging.getLogger("autotl")
FILE = "model.onnx"
OPSET = 18
TOLERANCE = 1e-4  # largest |onnxruntime - PyTorch| logit accepted; float reordering stays far below
INSTALL = 'pip install "autotl[onnx]"'
META_KEY = "autotl"  # model.onnx metadata: the best model it was exported from, labels, max length
# Batch 2 and unequal lengths: torch.export fixes an axis whose example size is 0 or 1, and
# the padding of the shorter row puts the mask's path into the graph.
EXAMPLE = ("an example", "a longer example sentence, so that the rows differ in length")
CHECK = ("one", "a third example of another length", "and a fourth, the longest of these rows by a few words")
# A text-pair model is exported and checked on pairs: its second segments' token type ids are 1.
PAIR_EXAMPLE = tuple(zip(EXAMPLE, reversed(EXAMPLE)))
PAIR_CHECK = tuple(zip(CHECK, reversed(CHECK)))


def require(*packages: str, what: str) -> None:
    """UsageError naming the missing packages and the install line, before any work."""
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"{what} needs {', '.join(missing)}, not installed; install with: {INSTALL}")


def require_export() -> None:
    require("onnx", "onnxscript", "onnxruntime", what="ONNX export")  # onnxruntime checks the export


@dataclass(frozen=True)
class Exported:
    """What `export_onnx` wrote."""

    path: Path  # the model.onnx published in the model directory
    inputs: tuple[str, ...]  # the graph's input names, in order
    max_diff: float  # largest |onnxruntime - PyTorch| logit on the check rows
    rows: int  # how many check rows


def input_names(tokenizer) -> tuple[str, ...]:
    """The graph's inputs: what the tokenizer makes, so its output can be fed as it is."""
    extra = ("token_type_ids",) if "token_type_ids" in tokenizer.model_input_names else ()
    return ("input_ids", "attention_mask", *extra)


def _logits_module(model):
    """`model` as the graph computes it: tokens in, logits out (the mean head's pooling included)."""
    from torch import nn

    from .model import Pooling, mean_pool

    class Logits(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            if model.pooling is Pooling.STANDARD:
                return model.net(input_ids=input_ids, attention_mask=attention_mask, **extra).logits
            hidden = model.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
            return model.head(mean_pool(hidden, attention_mask))

    return Logits().eval()


def _tokens(tokenizer, texts, names, max_length: int, tensors: str):
    from . import pairs

    if pairs.is_pairs(texts):  # the tokenizer's pair encoding, cut as training cut it
        encoded = tokenizer([a for a, _ in texts], [b for _, b in texts], padding=True, truncation=pairs.TRUNCATION,
                            max_length=max_length, return_tensors=tensors)
    else:
        encoded = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors=tensors)
    return tuple(encoded[name] for name in names)


def export_onnx(run) -> Exported:
    """Write model.onnx into the best model directory of `run` (RUN_DIR or its best/)."""
    import torch

    from .export import INFO, find_best, load_model

    require_export()
    folder = find_best(run)
    info_text = (folder / INFO).read_text(encoding="utf-8")
    model, tokenizer, info = load_model(folder, "cpu")  # a directory: the single model, never an ensemble
    names = input_names(tokenizer)
    pair = bool((info.get("data") or {}).get("text_pair"))
    example, checked = (PAIR_EXAMPLE, PAIR_CHECK) if pair else (EXAMPLE, CHECK)
    graph = _logits_module(model)
    axes = {name: {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")} for name in names}
    with _quiet_exporter():
        program = torch.onnx.export(graph, _tokens(tokenizer, example, names, info["max_length"], "pt"), None,
                                    dynamo=True, opset_version=OPSET, input_names=list(names),
                                    output_names=["logits"], dynamic_shapes=axes, verbose=False)
    program.model.metadata_props[META_KEY] = json.dumps(_metadata(info))
    tmp = folder.parent / f".best-tmp-onnx-{os.getpid()}"  # `clean_leftovers` knows .best-tmp-* after a crash
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        # One file (no external weights file): it is copied and checked as one. Protobuf's
        # 2 GB limit is far above autotl's backbones.
        program.save(str(tmp / FILE), external_data=False)
        check = _tokens(tokenizer, checked, names, info["max_length"], "pt")
        with torch.no_grad():  # autotl's own forward pass: what predict runs (token_type_ids for pairs only)
            expected = model(check[0], check[1], *(check[2:] if pair else ())).numpy()
        got = OnnxModel(tmp / FILE).session.run(["logits"], {n: t.numpy() for n, t in zip(names, check)})[0]
        diff = float(abs(got - expected).max())
        if not diff <= TOLERANCE:
            raise ModelError(f"the ONNX export disagrees with the PyTorch model (logits differ by {diff:.2e} on "
                             f"{len(checked)} check rows, tolerance {TOLERANCE:g}); nothing written; please report "
                             f"it with the torch {torch.__version__} and onnxruntime versions")
        target = _publish(tmp / FILE, folder, info_text)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Exported(target, names, diff, len(checked))


def _metadata(info: dict) -> dict:
    """Recorded in model.onnx: which best model it is (checked by `load_onnx`), and what a
    server needs besides the tokenizer: label names, task, max length."""
    data = info.get("data") or {}
    return {"created": info.get("created"), "trial": info.get("trial"), "study": info.get("study"),
            "task": data.get("task"), "label_names": data.get("label_names"), "max_length": info["max_length"],
            "pooling": info["head"]["pooling"], "opset": OPSET}


@contextlib.contextmanager
def _quiet_exporter():
    # The exporter and its graph optimizer report their internals (torchvision ops skipped,
    # deprecated pytree names, axis renames, nodes removed, initializers merged), at INFO on
    # the loggers the CLI shows: nothing a user can act on. The check after it is what counts.
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for each, level in zip(loggers, levels):
            each.setLevel(level)


def _publish(file: Path, folder: Path, info_text: str) -> Path:
    """Rename `file` into the model directory; in a run directory, under `best_lock` and only
    while best/ still holds the model exported (a search may have swapped in another)."""
    from .export import INFO, best_lock, fsync_dir, restore_dir

    if folder.name not in ("best", "best.old"):  # a model directory copied elsewhere: no writers to race
        os.replace(file, folder / FILE)
        fsync_dir(folder)
        return folder / FILE
    run_dir = folder.parent
    with best_lock(run_dir):
        restore_dir(run_dir, "best")  # find_best may have read best.old, left by a crashed swap
        best = run_dir / "best"
        try:
            unchanged = (best / INFO).read_text(encoding="utf-8") == info_text
        except OSError:
            unchanged = False
        if not unchanged:
            raise ModelError(f"{best} changed while model.onnx was exported (a search still writing it?); "
                             f"nothing written; run `autotl export {run_dir} --onnx` again when it is done")
        os.replace(file, best / FILE)
        fsync_dir(best)
    return best / FILE


class OnnxModel:
    """model.onnx in an onnxruntime CPU session, called like a TransferModel, ``(input_ids,
    attention_mask[, token_type_ids]) -> logits``, so that `train.infer` batches and pads for it exactly as
    for PyTorch."""

    def __init__(self, path, threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: onnxruntime's default, one per physical core
        options.log_severity_level = 3  # errors only: its warnings would break the CLI's one-line errors
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = tuple(i.name for i in self.session.get_inputs())
        meta = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
        self.metadata = json.loads(meta) if meta else {}

    def eval(self):
        return self

    def __call__(self, input_ids, attention_mask, token_type_ids=None):
        import torch

        feed = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        if "token_type_ids" in self.inputs:  # text pairs give theirs; one text per row is segment 0
            types = token_type_ids if token_type_ids is not None else input_ids.new_zeros(input_ids.shape)
            feed["token_type_ids"] = types.numpy()
        return torch.from_numpy(self.session.run(["logits"], feed)[0])


def load_onnx(run, device: str = "cpu", threads: int | None = None) -> tuple[OnnxModel, object, dict]:
    """(model, tokenizer, info) like `export.load_model`, the model being RUN_DIR/best/model.onnx
    in onnxruntime on the CPU. A run's ensemble is not exported: best/ alone is served."""
    from transformers import AutoTokenizer

    from .backbone import quiet_transformers, refuse_remote_code
    from .ensemble import find_ensemble
    from .export import find_best, read_info

    if device not in ("auto", "cpu"):
        raise UsageError(f"--onnx runs on the CPU (onnxruntime's CPU provider), not on device '{device}'; "
                         "drop --device or pass --device cpu")
    require("onnxruntime", what="--onnx")
    folder = find_best(run)
    file = folder / FILE
    if not file.is_file():
        raise ModelError(f"{folder} has no {FILE}; write it with `autotl export {run} --onnx`")
    info = read_info(folder)
    model = OnnxModel(file, threads)
    exported_from = (model.metadata.get("created"), model.metadata.get("trial"))
    if exported_from != (info.get("created"), info.get("trial")):
        raise ModelError(f"{file} was exported from another model than the one in {folder}; "
                         f"write it again with `autotl export {run} --onnx`")
    if Path(run).exists() and find_ensemble(run) not in (None, folder):
        log.warning("%s has an ensemble; --onnx serves %s alone (ensembles are not exported to ONNX)", run, folder)
    quiet_transformers()
    refuse_remote_code(folder)
    return model, AutoTokenizer.from_pretrained(folder, trust_remote_code=False), info
