"""The backend contract: what every backend implements and what the base class checks.

A backend declares its `name`, `kind` and a `Params` dataclass, then implements
`_train(corpus, directory, jobs)`, `_load(directory, manifest)` and
`_suggest_batch(texts)`. A backend that can update a trained model from new
documents sets `learns_online` and implements `_learn(corpus, previous,
directory)`. A backend without a model of its own sets `trainable = False`;
one with parameters read only when suggesting declares them, with the values to
try, in `search_space` (for `indexer hyperopt`). The public `train`, `learn`
and `suggest_batch` are the base class's: they validate state, save atomically
and call the hooks.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from collections.abc import Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from indexer.config import PROJECT_KEYS
from indexer.errors import (
    BackendError,
    ConfigError,
    InputError,
    NotSupportedError,
    NotTrainedError,
)
from indexer.params import NoParams, parse_params
from indexer.rendering import jsonable
from indexer.storage import (
    atomic_directory,
    load_arrays,
    read_manifest,
    save_arrays,
    write_manifest,
)
from indexer.suggestion import InvalidScores, SuggestionBatch

if TYPE_CHECKING:
    from indexer.corpus import Corpus
    from indexer.project import Project

ASSOCIATIVE = "associative"
LEXICAL = "lexical"
ENSEMBLE = "ensemble"
KINDS = (ASSOCIATIVE, LEXICAL, ENSEMBLE)
#: while a list is set here, every backend's suggestions append (project id,
#: seconds) to it: the REST layer sets one per request to see how long each
#: source of an ensemble took
SUGGEST_TIMES: ContextVar[list[tuple[str, float]] | None] = ContextVar(
    "suggest_times", default=None
)


class Backend:
    """Base class of all backends (the plugin contract)."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ASSOCIATIVE
    Params: ClassVar[type] = NoParams
    model_format: ClassVar[int] = 1
    #: has a model of its own that `train` fits (a plain ensemble has none)
    trainable: ClassVar[bool] = True
    #: lexical backends can suggest before any training
    needs_training: ClassVar[bool] = True
    #: can update a trained model from new documents (`learn`) without retraining
    learns_online: ClassVar[bool] = False
    #: its `_learn` writes every file of the model, so a learn's new version
    #: starts empty rather than as a copy of the current one
    learn_writes_whole_model: ClassVar[bool] = False
    #: parameters read only when suggesting, with the values `indexer hyperopt`
    #: tries on the trained model (empty: nothing to tune that way)
    search_space: ClassVar[dict[str, list]] = {}
    #: can train under torchrun, one process per device (DistributedDataParallel)
    trains_distributed: ClassVar[bool] = False
    #: in a cross-fitted fusion (backends/fusion_crossfit.py): "refit" trains a
    #: model per fold; "reuse" trains once on all documents and scores every
    #: fold with it (slow backends whose training does not memorise documents)
    cross_fit: ClassVar[str] = "refit"
    #: splits text into words with the project's analyzer: the analyzer is
    #: recorded in the manifest, and a model refuses to serve under another
    tokenizes: ClassVar[bool] = False

    def __init__(self, project: Project, params: dict[str, Any] | None = None):
        # No work here: listing projects must stay instant.
        self.project = project
        self.params = parse_params(
            self.Params, dict(params or {}), f"Project '{project.id}'", PROJECT_KEYS
        )
        self._lock = threading.RLock()
        self._loaded = False
        self._manifest: dict | None = None

    # -- state -----------------------------------------------------------
    @property
    def model_dir(self) -> Path:
        return self.project.model_dir

    @property
    def manifest(self) -> dict | None:
        return self._manifest_in(self.model_dir)

    def _manifest_in(self, directory: Path) -> dict | None:
        manifest = read_manifest(directory)
        if manifest and manifest.get("backend") == self.name:
            return manifest
        return None

    @property
    def is_trained(self) -> bool:
        manifest = self.manifest
        return bool(manifest) and manifest.get("format") == self.model_format

    def seen_subjects(self) -> np.ndarray | None:
        """Training frequency of every subject, or None when untrained."""
        path = self.model_dir / "subjects.npz"
        if not path.is_file():
            return None
        return load_arrays(path)["counts"]

    def labels_language(self, configured: str = "") -> str:
        """The language whose labels a backend matches: `configured` (a
        `label_language` parameter) or the project's. A configuration error
        names the languages the vocabulary has when it has no labels in it."""
        vocab, lang = self.project.vocab, configured or self.project.language
        if not vocab.has_language(lang):
            raise ConfigError(
                f"Project '{self.project.id}': vocabulary '{vocab.vocab_id}' has no "
                f"labels in '{lang}' (it has: {', '.join(vocab.languages)}). Set "
                "label_language to one of those (with a multilingual model for "
                "cross-lingual matching in embed)"
            )
        return lang

    # -- training --------------------------------------------------------
    def train(self, corpus: Corpus, jobs: int = 1) -> dict:
        """Train on `corpus` and replace the saved model atomically, holding
        the project's lock throughout (BusyError when another holds it)."""
        if not self.trainable:
            raise ConfigError(self._why_not_trainable())
        with self.project.lock.hold():
            started = time.perf_counter()
            counts = self._count_subjects(corpus)
            with atomic_directory(self.model_dir, self.project.lock) as directory:
                info = self._train_into(corpus, directory, jobs, counts)
        with self._lock:
            self._loaded = False
        return {
            "documents": int(corpus.stats.documents),
            "seconds": time.perf_counter() - started,
            **info,
        }

    def train_into(self, corpus: Corpus, directory: Path, jobs: int = 1) -> dict:
        """Write a whole model of this project (its files, the subject counts
        and the manifest) into `directory` without swapping it in: for an owner
        that stages several models and swaps them in together at the end (it
        holds this project's lock meanwhile)."""
        if not self.trainable:
            raise ConfigError(self._why_not_trainable())
        return self._train_into(corpus, directory, jobs, self._count_subjects(corpus))

    def _train_into(self, corpus: Corpus, directory: Path, jobs: int, counts) -> dict:
        info = self._train(corpus, directory, jobs) or {}
        save_arrays(directory / "subjects.npz", {"counts": counts})
        write_manifest(directory, self._manifest_for(corpus, counts, info))
        return info

    def learn(self, corpus: Corpus) -> dict:
        """Update the trained model with the documents of `corpus` (online
        learning) and replace the saved model atomically: the new version is
        written beside the current one, which stays in use until the swap."""
        if not self.learns_online:
            raise NotSupportedError(self._why_not_learning())
        with self.project.lock.hold():
            return self._learn_new_version(corpus)

    def _learn_new_version(self, corpus: Corpus) -> dict:
        previous = self.model_dir.resolve()
        manifest = self._manifest_in(previous)
        if manifest is None:
            raise NotTrainedError(
                f"Project '{self.project.id}' is not trained, so it has nothing to "
                f"update: run `indexer train {self.project.id} CORPUS` first"
            )
        self._check_manifest(manifest)
        counts = self._count_subjects(corpus, "corpus to learn", require_subjects=True)
        started = time.perf_counter()
        with atomic_directory(self.model_dir, self.project.lock) as directory:
            if not self.learn_writes_whole_model:
                shutil.copytree(previous, directory, dirs_exist_ok=True)
            info = self._learn(corpus, previous, directory) or {}
            seen = _padded(load_arrays(previous / "subjects.npz")["counts"], counts)
            save_arrays(directory / "subjects.npz", {"counts": seen})
            updated = self._manifest_after_learning(manifest, corpus, seen, info)
            write_manifest(directory, updated)
        with self._lock:
            self._loaded = False
        return {
            "documents": int(corpus.stats.documents),
            "total_documents": updated["documents"],
            "seconds": time.perf_counter() - started,
            **info,
        }

    def _why_not_trainable(self) -> str:
        """The error of `train` on a backend that is not `trainable` (hook)."""
        return f"Project '{self.project.id}' has nothing to train"

    def _why_not_learning(self) -> str:
        """The error of `learn` on a backend that does not learn online (hook)."""
        return (
            f"Backend '{self.name}' of project '{self.project.id}' does not "
            f"learn online; retrain it with `indexer train {self.project.id} "
            "CORPUS`"
        )

    def _learn(self, corpus: Corpus, previous: Path, directory: Path) -> dict | None:
        """Update the model read from `previous` with `corpus` and write the
        changed files into `directory`, which starts as a copy of `previous`
        (empty with `learn_writes_whole_model`; hook of backends with
        `learns_online`)."""
        raise NotImplementedError

    def _manifest_after_learning(
        self, manifest: dict, corpus: Corpus, seen: np.ndarray, info: dict
    ) -> dict:
        documents = int(corpus.stats.documents)
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        learned = {
            "documents": documents,
            "corpus_digest": corpus.digest(),
            "learned_at": now,
            "info": jsonable(info),
        }
        return {
            **manifest,
            "updated_at": now,
            "documents": int(manifest.get("documents", 0)) + documents,
            "subjects_seen": int((seen > 0).sum()),
            "vocab_size": max(int(manifest.get("vocab_size", 0)), len(seen)),
            "learned": [*manifest.get("learned", []), learned],
        }

    def _count_subjects(
        self,
        corpus: Corpus,
        what: str = "training corpus",
        require_subjects: bool | None = None,
    ) -> np.ndarray:
        """How often each subject occurs in `corpus`; an error when it has no
        documents, or no known subject where subjects are required (by default
        for associative backends)."""
        from tqdm import tqdm

        counts = np.zeros(len(self.project.vocab), dtype=np.int64)
        documents = 0
        for doc in tqdm(
            corpus, desc="Reading corpus", unit=" docs", leave=False, disable=None
        ):
            documents += 1
            if doc.subjects:
                np.add.at(counts, doc.subjects, 1)
        if documents == 0:
            raise InputError(f"The {what} contains no documents")
        if require_subjects is None:
            require_subjects = self.kind == ASSOCIATIVE
        if require_subjects and counts.sum() == 0:
            raise InputError(
                f"No document of the {what} has a subject of vocabulary "
                f"'{self.project.vocab.vocab_id}'; check the subject URIs. "
                + " ".join(corpus.stats.warnings())
            )
        return counts

    def _manifest_for(self, corpus: Corpus, counts: np.ndarray, info: dict) -> dict:
        return {
            "backend": self.name,
            "format": self.model_format,
            "params": jsonable(dataclasses.asdict(self.params), full_paths=True),
            "vocab": self.project.vocab.vocab_id,
            "vocab_size": len(self.project.vocab),
            "language": self.project.language,
            "corpus_digest": corpus.digest(),
            "documents": int(corpus.stats.documents),
            "subjects_seen": int((counts > 0).sum()),
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "info": jsonable(info, full_paths=True),
            **({"analyzer": str(self.project.analyzer_spec)} if self.tokenizes else {}),
        }

    def _train(self, corpus: Corpus, directory: Path, jobs: int) -> dict | None:
        """Fit the model and write it into `directory` (hook)."""
        raise NotImplementedError

    # -- suggesting ------------------------------------------------------
    def suggest_batch(self, texts: Sequence[str]) -> SuggestionBatch:
        """Scores of each text over the whole vocabulary (empty text: no scores)."""
        n_subjects = len(self.project.vocab)
        keep = [i for i, text in enumerate(texts) if text and text.strip()]
        if not keep:
            return SuggestionBatch.empty(len(texts), n_subjects)
        self._ensure_loaded()
        import scipy.sparse as sp

        batch = self._without_deprecated(self._scored([texts[i] for i in keep]))
        if len(keep) == len(texts):
            return batch

        placement = sp.csr_matrix(
            (np.ones(len(keep), dtype=np.float32), (keep, np.arange(len(keep)))),
            shape=(len(texts), len(keep)),
        )
        return SuggestionBatch(placement @ batch.matrix)

    def _without_deprecated(self, batch: SuggestionBatch) -> SuggestionBatch:
        """`batch` over today's vocabulary: padded when the vocabulary grew
        after training, and without the concepts that are deprecated or were
        removed from it since (a model may still score them)."""
        vocab = self.project.vocab
        deprecated = vocab.deprecated
        if batch.n_subjects == len(vocab) and not deprecated.any():
            return batch
        matrix = batch.matrix.copy()
        matrix.resize((matrix.shape[0], len(vocab)))
        matrix.data[deprecated[matrix.indices]] = 0
        return SuggestionBatch(matrix)

    def _scored(self, texts: list[str]) -> SuggestionBatch:
        """The hook's scores; NaN or out-of-range scores are refused with the
        backend's name rather than hidden."""
        times, started = SUGGEST_TIMES.get(), time.perf_counter()
        try:
            return self._suggest_batch(texts)
        except InvalidScores as exc:
            raise BackendError(
                f"Backend '{self.name}' of project '{self.project.id}' returned "
                f"invalid scores: {exc}"
            ) from None
        finally:
            if times is not None:
                times.append((self.project.id, time.perf_counter() - started))

    def _ensure_loaded(self) -> None:
        with self._lock:
            if self._loaded:
                return
            # one version throughout, even if a training swaps the link meanwhile
            directory = self.model_dir.resolve()
            manifest = self._manifest_in(directory)
            if manifest is None and self.needs_training:
                raise NotTrainedError.of(self.project.id)
            if manifest is not None:
                self._check_manifest(manifest)
            self._load(directory if manifest else None, manifest)
            self._manifest = manifest
            self._loaded = True

    # -- composition: a backend as a part of another backend's model ------
    def train_part(self, corpus, directory: Path, jobs: int = 1) -> dict:
        """Fit this backend into `directory`, a folder inside another
        backend's model being written (no manifest, no swap, no lock: the
        owner of the model does those)."""
        return self._train(corpus, directory, jobs) or {}

    def load_part(self, directory: Path | None) -> None:
        """Load this backend from `directory`, a folder of another backend's
        model (None: untrained); it never reloads from its own project."""
        with self._lock:
            self._load(directory, None)
            self._manifest = None
            self._loaded = True

    def _check_manifest(self, manifest: dict) -> None:
        if manifest.get("format") != self.model_format:
            raise NotTrainedError(
                f"Project '{self.project.id}' has a model in format "
                f"{manifest.get('format')}, this version reads format "
                f"{self.model_format}: "
                f"retrain with `indexer train {self.project.id} CORPUS`"
            )
        if manifest.get("vocab") != self.project.vocab.vocab_id:
            raise NotTrainedError(
                f"Project '{self.project.id}' was trained with vocabulary "
                f"'{manifest.get('vocab')}', but is configured with "
                f"'{self.project.vocab.vocab_id}': retrain it"
            )
        if self.tokenizes:
            self._check_analyzer(manifest)
        if manifest.get("vocab_size", 0) > len(self.project.vocab):
            raise NotTrainedError(
                f"Vocabulary '{self.project.vocab.vocab_id}' shrank since project "
                f"'{self.project.id}' was trained: reload the vocabulary or retrain"
            )

    def _check_analyzer(self, manifest: dict) -> None:
        """A model's words are the analyzer's tokens: under another analyzer
        they would silently match almost nothing."""
        from indexer.analyzer import default_analyzer

        # models from before the setting were all made with the default
        trained = manifest.get("analyzer") or str(
            default_analyzer(manifest.get("language") or self.project.language)
        )
        configured = str(self.project.analyzer_spec)
        if trained != configured:
            raise NotTrainedError(
                f"Project '{self.project.id}' was trained with analyzer = "
                f"{trained}, but is configured with analyzer = {configured}: "
                f"retrain it with `indexer train {self.project.id} CORPUS`, or set "
                f"analyzer = {trained} again"
            )

    def _load(self, directory: Path | None, manifest: dict | None) -> None:
        """Read the model from `directory` (None: untrained lexical backend)."""

    def _suggest_batch(self, texts: list[str]) -> SuggestionBatch:
        """Score non-empty texts (hook)."""
        raise NotImplementedError

    def explain(self, text: str, subjects: Sequence[int]) -> dict[int, dict]:
        """Why each of `subjects` was suggested for `text` (optional)."""
        return {}


def _padded(counts: np.ndarray, more: np.ndarray) -> np.ndarray:
    """Sum of two count vectors (the vocabulary may have grown in between)."""
    out = np.zeros(max(len(counts), len(more)), dtype=np.int64)
    out[: len(counts)] += counts
    out[: len(more)] += more
    return out
