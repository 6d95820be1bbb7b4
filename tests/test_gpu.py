"""The GPU paths: bf16, every GPU busy, memory back to its baseline between trials.

Run where a CUDA GPU is visible (they are skipped, with the reason, elsewhere). The same
checks on the real backbone, for a lent GPU machine: benchmarks/gpu_check.py.
"""

import pytest
import torch

import autotl

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_training_on_the_gpu_uses_bf16_autocast(tiny_model, monkeypatch):
    from autotl.strategy import ParamGroup, Plan, Stage
    from autotl.testing import tiny_setup
    from autotl.train import autocast_for, fit

    assert torch.cuda.is_bf16_supported()
    seen = []
    model = tiny_model("mean")
    model.head_.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    train, val, settings = tiny_setup()
    plan = Plan((Stage((ParamGroup(tuple(model.parameters()), 1e-3),), 1),), batch_size=8)
    from dataclasses import replace

    result = fit(model, plan, train, val, replace(settings, device="cuda:0"))
    assert autocast_for("cuda:0") is not None and torch.bfloat16 in seen
    assert result.scores and all(s == s for s in result.scores)


def test_gpu_memory_returns_to_its_baseline_between_trials(tiny_csv, tiny_model_dir, tmp_path, monkeypatch):
    import autotl.runner

    allocated = []
    release = autotl.runner.release_memory

    def measured(device):
        release(device)
        allocated.append(torch.cuda.memory_allocated())

    monkeypatch.setattr(autotl.runner, "release_memory", measured)
    autotl.search(tiny_csv, model=tiny_model_dir, out=tmp_path / "run", n_trials=5, device="cuda:0",
                  strategies=["full_finetune", "freeze"], progress=False, refit=False, pruner="none")
    assert len(allocated) == 5 and max(allocated[1:]) <= allocated[0] + 1024**2, allocated


def test_every_gpu_runs_trials(tiny_csv, tiny_model_dir, tmp_path):
    import optuna

    from autotl.storage import open_storage

    count = torch.cuda.device_count()
    autotl.search(tiny_csv, model=tiny_model_dir, out=tmp_path / "run", n_trials=3 * count, device="auto",
                  trials_per_device=1, strategies=["full_finetune", "linear_probe"], progress=False)
    trials = optuna.load_study(study_name="autotl", storage=open_storage(None, tmp_path / "run")).trials
    assert len({t.user_attrs["worker"] for t in trials}) == count
