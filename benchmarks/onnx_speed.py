"""Predict speed on the CPU: PyTorch against onnxruntime, side by side on the same rows.

    taskset -c 1 python benchmarks/onnx_speed.py ../shared/data/sst2/test.csv [--rows 512] [--threads 1]

The default backbone (all-MiniLM-L6-v2) with a fresh head, nothing trained (the speed does
not depend on the weights), saved as a run's best/ and exported by the code behind
`autotl export RUN_DIR --onnx`. Both runtimes then do what `autotl predict` does per row:
tokenize, batch (64 rows, bucketed by length, padded per batch), forward; loading the
model is timed apart. Each repeat runs PyTorch then onnxruntime on the same rows, so
that other processes' load falls on both alike; rows/second is the median repeat. Also
reported: the largest logit difference between the two and how many labels agree.

Prints a markdown table; writes benchmarks/results/onnx_speed.json and onnx_speed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
LABELS = ("negative", "positive")


def timed(model, tokenizer, texts, *, max_length: int, batch_size: int):
    """(seconds, outputs, encoded rows) of one predict pass over `texts`."""
    import numpy as np

    from autotl.batching import encode
    from autotl.train import infer

    start = time.perf_counter()
    encoded = encode(tokenizer, texts, np.zeros(len(texts)), max_length, key="bench")
    outputs = infer(model, encoded, pad_id=tokenizer.pad_token_id or 0, device="cpu", batch_size=batch_size)
    return time.perf_counter() - start, outputs, encoded


def measure(args) -> dict:
    import numpy as np
    import onnxruntime
    import pandas as pd
    import torch
    import transformers

    import autotl
    from autotl.backbone import load_backbone, load_tokenizer
    from autotl.export import save_best
    from autotl.model import build_model
    from autotl.onnx_export import OPSET, export_onnx, load_onnx

    torch.set_num_threads(args.threads)
    texts = pd.read_csv(args.data)["text"].fillna("").astype(str).tolist()[: args.rows]
    backbone = load_backbone(args.model)
    torch.manual_seed(0)
    model = build_model(backbone.path, args.head, num_outputs=len(LABELS), label_names=LABELS, regression=False)
    info = {"trial": 0, "study": "onnx_speed",
            "data": {"text_col": "text", "task": "classification", "label_names": list(LABELS)}}
    with tempfile.TemporaryDirectory(prefix="autotl-onnx-speed-") as run:
        save_best(model.eval(), load_tokenizer(backbone.path), Path(run), info, max_length=args.max_length)
        start = time.perf_counter()
        exported = export_onnx(run)
        export_seconds = time.perf_counter() - start
        onnx_mb = exported.path.stat().st_size / 1e6
        loaded, loads = {}, {}
        for name, load in (("PyTorch", lambda: autotl.load(run, "cpu")),
                           ("onnxruntime", lambda: load_onnx(run, threads=args.threads))):
            start = time.perf_counter()
            loaded[name], tokenizer, _ = load()
            loads[name] = time.perf_counter() - start
        for model in loaded.values():  # warm-up: first-call allocations and lazy initialisation
            timed(model, tokenizer, texts[: args.batch_size], max_length=args.max_length, batch_size=args.batch_size)
        seconds = {name: [] for name in loaded}
        outputs = {}
        for _ in range(args.repeats):
            for name, model in loaded.items():
                took, outputs[name], encoded = timed(model, tokenizer, texts, max_length=args.max_length,
                                                     batch_size=args.batch_size)
                seconds[name].append(took)
    rate = {name: len(texts) / statistics.median(s) for name, s in seconds.items()}
    return {
        "data": str(args.data), "rows": len(texts), "mean_tokens": round(float(encoded.lengths.mean()), 1),
        "backbone": backbone.name, "head": args.head, "threads": args.threads, "batch_size": args.batch_size,
        "max_length": args.max_length, "repeats": args.repeats, "onnx_opset": OPSET,
        "cpus": sorted(os.sched_getaffinity(0)),
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                     "transformers": transformers.__version__, "autotl": autotl.__version__},
        "export_seconds": round(export_seconds, 1), "onnx_mb": round(onnx_mb, 1),
        "load_seconds": {k: round(v, 2) for k, v in loads.items()},
        "seconds": {k: [round(x, 3) for x in v] for k, v in seconds.items()},
        "rows_per_second": {k: round(v, 1) for k, v in rate.items()},
        "onnxruntime_vs_pytorch": round(rate["onnxruntime"] / rate["PyTorch"], 2),
        "max_logit_diff": float(np.abs(outputs["onnxruntime"] - outputs["PyTorch"]).max()),
        "labels_agree": int((outputs["onnxruntime"].argmax(1) == outputs["PyTorch"].argmax(1)).sum()),
    }


def table(r: dict) -> str:
    lines = ["| runtime (CPU) | rows/s | vs PyTorch | model load s |", "|---|---|---|---|"]
    for name, rate in r["rows_per_second"].items():
        lines.append(f"| {name} | {rate:.1f} | {rate / r['rows_per_second']['PyTorch']:.2f}x | "
                     f"{r['load_seconds'][name]:.2f} |")
    lines.append("")
    lines.append(f"{r['rows']} rows of {r['data']} (mean {r['mean_tokens']} tokens), {r['backbone']}, {r['head']} "
                 f"head, batch {r['batch_size']}, max length {r['max_length']}, {r['threads']} thread(s) each, "
                 f"CPU(s) {','.join(map(str, r['cpus']))}; median of {r['repeats']} alternating repeats. "
                 f"Logits agree within {r['max_logit_diff']:.1e}; labels agree on {r['labels_agree']}/{r['rows']} "
                 f"rows. Export (opset {r['onnx_opset']}, {r['onnx_mb']:.0f} MB) took {r['export_seconds']:.1f} s. "
                 f"torch {r['versions']['torch']}, onnxruntime {r['versions']['onnxruntime']}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="CSV with a text column, e.g. ../shared/data/sst2/test.csv")
    parser.add_argument("--rows", type=int, default=512, help="the first N rows (default 512)")
    parser.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per runtime (default 3)")
    parser.add_argument("--batch-size", type=int, default=64, help="rows per forward pass (predict's default 64)")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per row (autotl's default 128)")
    parser.add_argument("--head", choices=("mean", "standard"), default="mean")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="backbone (default all-MiniLM-L6-v2)")
    parser.add_argument("--out", type=Path, default=RESULTS / "onnx_speed", help="writes OUT.json and OUT.md")
    args = parser.parse_args()
    result = measure(args)
    text = table(result)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
