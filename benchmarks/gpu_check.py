"""One prepared check of the GPU paths, for a machine with CUDA GPUs (e.g. a lent H200).

    python benchmarks/gpu_check.py ../shared/data/sst2 [--minutes 4] [--trials-per-device 2]

1. Runs the GPU tests (tests/test_gpu.py: bf16 autocast, allocated bytes back to their
   baseline between trials, every GPU runs trials).
2. Runs `autotl search` on the dataset with --devices auto and --trials-per-device N for a
   few minutes while sampling every GPU's utilization and memory once a second
   (nvidia-smi), and prints per GPU: mean and peak utilization, peak memory, and the share
   of samples it was busy (> 10 %).
Writes benchmarks/results/gpu_check.json. Needs nothing beyond autotl and nvidia-smi.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def sample_gpus(samples: list, stop: threading.Event) -> None:
    query = ["nvidia-smi", "--query-gpu=index,utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
    while not stop.is_set():
        out = subprocess.run(query, capture_output=True, text=True).stdout
        now = time.monotonic()
        for line in out.strip().splitlines():
            index, util, mem = (int(x) for x in line.split(","))
            samples.append({"t": now, "gpu": index, "util": util, "mem_mib": mem})
        stop.wait(1.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="folder with train.csv and test.csv")
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--trials-per-device", type=int, default=2)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "gpu_check.json")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_check.py: error: no CUDA GPU visible", file=sys.stderr)
        return 2
    report = {"gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
              "bf16": torch.cuda.is_bf16_supported(), "torch": torch.__version__}
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "tests/test_gpu.py"],
                           capture_output=True, text=True)
    report["gpu_tests"] = {"returncode": tests.returncode, "tail": tests.stdout[-1500:]}
    print(tests.stdout[-1500:], flush=True)

    samples, stop = [], threading.Event()
    sampler = threading.Thread(target=sample_gpus, args=(samples, stop), daemon=True)
    run_dir = Path(tempfile.mkdtemp(prefix="autotl-gpu-check-"))
    cmd = [sys.executable, "-m", "autotl.cli", "search", str(args.dataset / "train.csv"), "--test",
           str(args.dataset / "test.csv"), "--devices", "auto", "--trials-per-device", str(args.trials_per_device),
           "--timeout", f"{args.minutes}m", "--out", str(run_dir), "--no-progress"]
    start = time.monotonic()
    sampler.start()
    search = subprocess.run(cmd, capture_output=True, text=True)
    stop.set()
    sampler.join()
    report["search"] = {"returncode": search.returncode, "seconds": round(time.monotonic() - start, 1),
                        "tail": (search.stdout + search.stderr)[-3000:]}
    print(report["search"]["tail"], flush=True)
    print("\n| GPU | mean util % | peak util % | busy share | peak memory MiB |\n|---|---|---|---|---|")
    per_gpu = {}
    for gpu in sorted({s["gpu"] for s in samples}):
        mine = [s for s in samples if s["gpu"] == gpu]
        row = {"mean_util": sum(s["util"] for s in mine) / len(mine), "peak_util": max(s["util"] for s in mine),
               "busy_share": sum(s["util"] > 10 for s in mine) / len(mine),
               "peak_mem_mib": max(s["mem_mib"] for s in mine)}
        per_gpu[gpu] = row
        print(f"| {gpu} | {row['mean_util']:.0f} | {row['peak_util']} | {row['busy_share']:.0%} | "
              f"{row['peak_mem_mib']} |")
    report["per_gpu"] = per_gpu
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if tests.returncode == 0 and search.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
