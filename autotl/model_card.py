"""best/README.md: a Hugging Face model card (YAML metadata + prose) for the exported model.

Written with huggingface_hub's ModelCard so the metadata is what the hub validates
(base_model, library_name, pipeline_tag, tags, metrics and a model-index of results). Every
save of best/ writes a card from autotl.json alone; at the end of a search it is rewritten
with the top of the leaderboard and the test score. The card is documentation, not part of
the model: it is left out of autotl.json's file manifest, so rewriting it never makes a
checked model directory look damaged.
"""

from __future__ import annotations

import os
from pathlib import Path

from .bundled import BUNDLED

CARD = "README.md"
TOP = 5  # leaderboard rows shown in the card


def hub_id(backbone: str | None) -> str | None:
    """The hub id of a backbone when it has one (a bundled name or a hub id), else None:
    a local directory is not a valid `base_model`."""
    if not backbone:
        return None
    for bundled in BUNDLED.values():
        if backbone.lower() in bundled.aliases:
            return f"sentence-transformers/{bundled.name}"
    if "/" in backbone and not os.path.exists(backbone) and backbone.count("/") == 1:
        return backbone
    return None


def card_text(info: dict, leaderboard: list[dict] | None = None) -> str:
    """The model card for the model that `info` (autotl.json's content) describes."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    data = info.get("data") or {}
    task = data.get("task", "classification")
    metric = info.get("metric", "")
    scores = info.get("scores") or {}
    standard = (info.get("head") or {}).get("pipeline_compatible", False)
    dataset = Path(str(data.get("source") or "data.csv")).stem
    results = []
    if scores.get("val") is not None:
        results.append(EvalResult(task_type=_task_type(task), dataset_type="csv", dataset_name=dataset,
                                  dataset_split="validation", metric_type=metric, metric_value=round(scores["val"], 4)))
    for name, value in ((scores.get("test") or {}).get("metrics") or {}).items():
        results.append(EvalResult(task_type=_task_type(task), dataset_type="csv", dataset_name=dataset,
                                  dataset_split="test", metric_type=name, metric_value=round(value, 4)))
    meta = ModelCardData(
        base_model=hub_id(info.get("backbone")),
        library_name="transformers" if standard else "autotl",
        pipeline_tag="text-classification",
        tags=["autotl", "transfer-learning", f"strategy:{info.get('strategy', '?')}", task],
        metrics=sorted({metric, *((scores.get("test") or {}).get("metrics") or {})} - {""}),
        model_name=f"autotl-{dataset}",
        eval_results=results or None,
    )
    body = "\n".join(_body(info, leaderboard, dataset, standard))
    return str(ModelCard(f"---\n{meta.to_yaml()}\n---\n\n{body}\n"))


def write_card(folder: Path, info: dict, leaderboard: list[dict] | None = None) -> Path:
    """Write (or replace, atomically) FOLDER/README.md."""
    path = Path(folder) / CARD
    tmp = path.with_name(f".{CARD}.{os.getpid()}.tmp")
    tmp.write_text(card_text(info, leaderboard))
    os.replace(tmp, path)
    return path


def _task_type(task: str) -> str:
    return "text-classification"  # the hub's task for sequence classification and regression alike


def _body(info: dict, leaderboard, dataset: str, standard: bool) -> list[str]:
    data = info.get("data") or {}
    scores = info.get("scores") or {}
    metric = info.get("metric", "")
    labels = data.get("label_names") or []
    lines = [f"# autotl-{dataset}", "",
             f"The `{info.get('backbone', '?')}` backbone transferred to `{dataset}` by "
             f"autotl, which searched transfer strategies and their "
             f"hyperparameters together with Optuna and chose **{info.get('strategy', '?')}** "
             f"(trial {info.get('trial')}: {info.get('summary', '')}).", "",
             "## Results", ""]
    if scores.get("val") is not None:
        lines.append(f"- validation {metric}: {scores['val']:.4f} ({data.get('num_val', '?')} rows)")
    test = scores.get("test")
    if test:
        lines.append(f"- test ({test.get('rows', '?')} rows, scored once): "
                     + ", ".join(f"{k} {v:.4f}" for k, v in test["metrics"].items()))
    if info.get("refit"):
        lines.append(f"- retrained on all {info['refit'].get('rows')} labelled rows (train + validation) "
                     "after the choice; the validation score is the trial's, before the refit")
    if info.get("soup"):
        lines.append(f"- a weight soup of trials {', '.join(map(str, info['soup']['members']))}")
    lines.append("")
    if leaderboard:
        done = [r for r in leaderboard if r.get("state") == "complete"][:TOP]
        lines += ["## What was searched", "",
                  f"Top {len(done)} of {len(leaderboard)} trials (validation {metric}):", "",
                  "| trial | strategy | head | score | seconds |", "|---:|---|---|---:|---:|"]
        lines += [f"| {r['trial']} | {_cell(r['strategy'])} | {_cell(r['head'])} | {r['score']:.4f} | {r['seconds']} |"
                  for r in done]
        lines.append("")
    task = data.get("task", "classification")
    pair = data.get("text_pair")
    texts = (f"text pair `{pair[0]}` + `{pair[1]}` (encoded together, the tokenizer's pair encoding)" if pair
             else f"text column `{data.get('text_col')}`")
    lines += ["## Data", "",
              f"- task: {task}; {texts}, label column `{data.get('label_col')}`",
              f"- rows: {data.get('num_train', '?')} train, {data.get('num_val', '?')} validation"
              + (f", {data['num_test']} test" if data.get("num_test") else "")]
    if labels:
        shown = ", ".join(f"`{_cell(str(n))}`" for n in labels[:20])
        lines.append(f"- {len(labels)} labels: {shown}" + (" ..." if len(labels) > 20 else ""))
    lines += ["", "## How to use", ""]
    if standard:
        lines += ["```python", "from transformers import pipeline", "",
                  'classify = pipeline("text-classification", model="path/to/best")',
                  # truncation=True: long pairs cut longest_first at the saved max length, as autotl cuts them
                  'classify({"text": "the first text", "text_pair": "the second text"}, truncation=True)' if pair
                  else 'classify("some text")', "```", ""]
    several = task == "multitask"
    lines += ["```python", "import autotl", "",
              'predictions = autotl.predict("path/to/best", "new.csv")  # a DataFrame: '
              + ("one column per task (and prob_<task>_<label>)" if several else "prediction (and probabilities)"),
              'model, tokenizer, info = autotl.load("path/to/best")  # the PyTorch model itself',
              *(["# its outputs, per task: autotl.task_outputs(model(input_ids, attention_mask), info)"] if several
                else []), "```", "",
              "or from a shell: `autotl predict path/to/run new.csv`"
              + (f" (new.csv with columns `{pair[0]}` and `{pair[1]}`)." if pair else "."), "",
              "## Limitations", "",
              f"- Trained on {data.get('num_train', '?')} rows of one dataset; expect lower scores on text "
              "unlike it (other domains, languages, lengths).",
              f"- Texts are cut at {info.get('max_length', '?')} tokens.",
              "- The validation score chose the model among many trials and is optimistic; the test "
              "score, when given, is the unbiased one."]
    if not standard and (info.get("head") or {}).get("pooling") == "standard":  # the head+tail cut (export._head_info)
        lines.append("- Long texts were cut head+tail (their beginning and end) in training; `transformers.pipeline` "
                     "cuts them at the head, so predict with `autotl.load` or `autotl predict`.")
    elif not standard:
        lines.append("- The mean-pooled head is not a transformers module: load with `autotl.load` "
                     "or `autotl predict`, not `transformers.pipeline`.")
    return lines


def _cell(text: str) -> str:
    """A value safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")
