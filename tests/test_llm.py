from __future__ import annotations

from indexer.neural.llm import model_class
from indexer.neural.models import resolve_model


def test_decoders_load_through_their_own_class(tiny_llm, tmp_path):
    model = resolve_model(str(tiny_llm))
    assert model_class(model, True, None).__name__.endswith("ForCausalLM")
    assert model_class(model, False, None).__name__.endswith("Model")
    (tmp_path / "config.json").write_text('{"model_type": "no-such-type"}')
    assert model_class(resolve_model(str(tmp_path)), True, "auto") == "auto"
