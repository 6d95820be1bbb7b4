"""Which devices a search runs on, and how many worker processes each gets."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import UsageError


@dataclass(frozen=True)
class Slot:
    """One worker process: its device as it will see it, and what it is told to see."""

    device: str  # "cpu" or "cuda:N" as named on the command line
    visible: str | None  # CUDA_VISIBLE_DEVICES for the worker (None: CPU)
    threads: int  # torch intra-op threads (CPU workers share the cores)

    @property
    def local_device(self) -> str:
        """The device inside the worker, which sees only its own GPU as cuda:0."""
        return "cpu" if self.visible is None else "cuda:0"


def parse_devices(spec: str, gpu_count: int | None = None) -> list[str]:
    """'auto' (every visible GPU, else the CPU), 'cpu', 'cuda' (= cuda:0), 'cuda:0,1' or
    'cuda:0,cuda:1' -> device names."""
    if gpu_count is None:
        import torch

        gpu_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    spec = spec.strip().lower()
    if spec == "auto":
        return [f"cuda:{i}" for i in range(gpu_count)] or ["cpu"]
    if spec == "cpu":
        return ["cpu"]
    if not spec.startswith("cuda"):
        raise UsageError(f"unknown devices '{spec}'; use auto, cpu, cuda or cuda:0,1,...")
    ids = [part.strip().removeprefix("cuda").lstrip(":") or "0" for part in spec.split(",")]
    if not all(i.isdigit() for i in ids) or len(set(ids)) != len(ids):
        raise UsageError(f"cannot read devices '{spec}'; write e.g. cuda:0,1 (each GPU once)")
    if gpu_count == 0:
        raise UsageError(f"devices '{spec}' requested but no CUDA GPU is visible; use --devices cpu")
    missing = [i for i in ids if int(i) >= gpu_count]
    if missing:
        raise UsageError(f"GPU {', '.join(missing)} does not exist: {gpu_count} visible "
                         f"(cuda:0 to cuda:{gpu_count - 1})")
    return [f"cuda:{i}" for i in ids]


def worker_slots(devices: list[str], trials_per_device: int, cpu_count: int | None = None) -> list[Slot]:
    """One Slot per worker process: `trials_per_device` per device."""
    if trials_per_device < 1:
        raise UsageError(f"trials_per_device must be >= 1, got {trials_per_device}")
    cpu_count = cpu_count or os.cpu_count() or 1
    slots = []
    cpu_workers = trials_per_device if "cpu" in devices else 0
    for device in devices:
        visible = None if device == "cpu" else device.split(":")[1]
        # CPU workers split the cores; a GPU worker needs a couple for its data and launches.
        threads = max(1, cpu_count // cpu_workers) if visible is None else max(1, min(4, cpu_count // len(devices)))
        slots += [Slot(device, visible, threads)] * trials_per_device
    return slots
