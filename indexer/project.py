"""Projects: a vocabulary, a backend with its parameters, and where the model lives."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from pathlib import Path

from indexer.config import Config, ProjectConfig, check_id, load_config
from indexer.errors import ConfigError, NotFoundError, UsageError
from indexer.locking import ResourceLock
from indexer.registry import check_dependencies, get_backend_class
from indexer.storage import remove_directory
from indexer.suggestion import SuggestionBatch
from indexer.vocab import Vocabulary, source_stamp


class Projects:
    """All configured projects and vocabularies, loaded lazily."""

    def __init__(self, config: Config):
        self.config = config
        self.data_dir = config.data_dir
        self._projects: dict[str, Project] = {}
        self._vocabs: dict[str, Vocabulary] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_path(cls, path: str | Path | None = None) -> Projects:
        return cls(load_config(path))

    def ids(self) -> list[str]:
        return list(self.config.projects)

    def __iter__(self) -> Iterator[Project]:
        return (self.get(project_id) for project_id in self.config.projects)

    def get(self, project_id: str) -> Project:
        """The project `project_id`, or an error listing the valid ids."""
        with self._lock:
            if project_id not in self._projects:
                if project_id not in self.config.projects:
                    known = ", ".join(self.config.projects) or "(none configured)"
                    where = (
                        ", ".join(map(str, self.config.sources))
                        or "no projects.cfg found"
                    )
                    raise NotFoundError(
                        f"No project '{project_id}'. Projects: {known} (from {where})"
                    )
                self._projects[project_id] = Project(
                    self.config.projects[project_id], self
                )
            return self._projects[project_id]

    def vocab_ids(self) -> list[str]:
        loaded = [
            p.name
            for p in (self.data_dir / "vocabs").glob("[!.]*")
            if (p / "vocab.json").exists()
        ]
        return sorted(set(loaded) | set(self.config.vocabs))

    def vocab(self, vocab_id: str, autoload: bool = True) -> Vocabulary:
        """The vocabulary `vocab_id`; loaded from its configured source on first use."""
        check_id(vocab_id, "Vocabulary")
        with self._lock:
            if vocab_id not in self._vocabs:
                vocab = Vocabulary(
                    vocab_id,
                    self.data_dir / "vocabs" / vocab_id,
                    ResourceLock.for_vocabulary(self.data_dir, vocab_id),
                )
                source = self.config.vocabs.get(vocab_id)
                if autoload and source and source.source:
                    _autoload(vocab, source.source, source.language)
                self._vocabs[vocab_id] = vocab
            return self._vocabs[vocab_id]


def _autoload(vocab: Vocabulary, source: Path, language: str | None) -> None:
    """Load a configured vocabulary that is missing or older than its source; a
    load running elsewhere is waited for, and then usually makes this one moot."""
    if not _stale(vocab, source):
        return
    with vocab.lock.hold(wait=True):
        vocab.refresh()
        if _stale(vocab, source):
            _tell(f"Loading vocabulary '{vocab.vocab_id}' from {source}")
            vocab.load_file(source, language)


def _tell(line: str) -> None:
    print(line, file=sys.stderr)


def _stale(vocab: Vocabulary, source: Path) -> bool:
    """Not loaded yet, or the configured source file changed since it was loaded."""
    if not vocab.exists:
        return True
    if not source.is_file():
        return False
    return vocab.info.get("source_stamp") != source_stamp(source)


class Project:
    """A configured project; nothing heavy happens until it is used."""

    def __init__(self, config: ProjectConfig, projects: Projects):
        self.config = config
        self.projects = projects

    id = property(lambda self: self.config.id)
    name = property(lambda self: self.config.name)
    language = property(lambda self: self.config.language)
    limit = property(lambda self: self.config.limit)
    threshold = property(lambda self: self.config.threshold)
    access = property(lambda self: self.config.access)

    @property
    def analyzer_spec(self):
        """The parsed `analyzer` setting (default: Snowball in the project language)."""
        from indexer.analyzer import default_analyzer, parse_analyzer

        if not self.config.analyzer:
            return default_analyzer(self.language)
        return parse_analyzer(self.config.analyzer, f"Project '{self.id}': ")

    @property
    def analyzer(self):
        """The analyzer that the project's backends tokenize with (shared)."""
        from indexer.analyzer import build_analyzer

        return build_analyzer(self.analyzer_spec)

    @property
    def backend_class(self) -> type:
        return get_backend_class(self.config.backend)

    @property
    def kind(self) -> str:
        return self.backend_class.kind

    @cached_property
    def backend(self):
        """The backend instance (parameters and dependencies are checked here)."""
        return self.new_backend()

    def new_backend(self):
        """A fresh, unloaded backend of this project (not the one it serves)."""
        check_dependencies(self.config.backend)
        return self.backend_class(self, self.config.params)

    def reload(self) -> None:
        """Load the saved model into a fresh backend, then swap it in: suggestions
        running meanwhile finish on the old one and none sees a half-loaded model.
        On an error the previous backend stays."""
        backend = self.new_backend()
        backend._ensure_loaded()
        self.__dict__["backend"] = backend

    def unload(self) -> None:
        """Drop the loaded backend and its model; the next use loads them anew
        (for example after the model files changed on disk)."""
        self.__dict__.pop("backend", None)

    @property
    def vocab(self) -> Vocabulary:
        vocab = self.projects.vocab(self.config.vocab)
        if not vocab.exists:
            raise NotFoundError(
                f"Vocabulary '{self.config.vocab}' of project '{self.id}' is not "
                "loaded: "
                f"run `indexer load-vocab {self.config.vocab} FILE`"
            )
        if self.__dict__.get("_language_checked") is not vocab:
            self._check_language(vocab)
            self.__dict__["_language_checked"] = vocab
        return vocab

    def _check_language(self, vocab: Vocabulary) -> None:
        """The project language must be one the analyzer stems or one the
        vocabulary has labels in; anything else is a typo that would silently
        match nothing."""
        from indexer.analyzer import has_stemmer, stemmer_languages

        if has_stemmer(self.language) or vocab.has_language(self.language):
            return
        raise ConfigError(
            f"Project '{self.id}': language '{self.language}' has no stemmer and "
            f"vocabulary '{vocab.vocab_id}' has no labels in it. Stemmed languages: "
            f"{', '.join(stemmer_languages())}; label languages: "
            f"{', '.join(vocab.languages)}"
        )

    @property
    def model_dir(self) -> Path:
        return self.projects.data_dir / "projects" / self.id / "model"

    @property
    def lock(self) -> ResourceLock:
        """Held while the model is trained, updated or cleared (any process)."""
        return ResourceLock.for_project(self.projects.data_dir, self.id)

    @property
    def is_trained(self) -> bool:
        return self.backend.is_trained

    @property
    def is_ready(self) -> bool:
        """Can suggest now (trained, or a backend that needs no training)."""
        return self.is_trained or not self.backend.needs_training

    def corpus(self, paths: Iterable[str | Path]):
        from indexer.corpus import Corpus

        return Corpus(paths, self.vocab, self.language)

    def train(
        self, paths: Sequence[str | Path], jobs: int = 1, wait: bool = False
    ) -> dict:
        """Train the backend on the corpus at `paths`, holding the project's
        lock (BusyError when another training holds it, unless `wait`)."""
        if not paths:
            raise UsageError("Give at least one training corpus")
        from indexer.distributed import current_world

        corpus = self.corpus(paths)
        # under torchrun, rank 0 holds the lock and saves; the others save nothing
        writes = current_world().is_main
        with self.lock.hold(wait=wait) if writes else contextlib.nullcontext():
            info = self.backend.train(corpus, jobs=jobs)
        info["warnings"] = corpus.stats.warnings()
        return info

    def learn(self, corpus, wait: bool = False) -> dict:
        """Update the trained model from `corpus` (paths or a `Corpus`), holding
        the project's lock as `train` does."""
        from indexer.corpus import Corpus

        if not isinstance(corpus, Corpus):
            corpus = self.corpus(corpus)
        with self.lock.hold(wait=wait):
            info = self.backend.learn(corpus)
        info["warnings"] = corpus.stats.warnings()
        return info

    def suggest(
        self,
        texts: Sequence[str],
        limit: int | None = None,
        threshold: float | None = None,
    ) -> SuggestionBatch:
        """Suggestions for each text, filtered by limit and threshold."""
        limit = self.limit if limit is None else limit
        threshold = self.threshold if threshold is None else threshold
        if limit < 1 or not 0.0 <= threshold <= 1.0:
            raise UsageError("limit must be >= 1 and threshold between 0 and 1")
        return self.backend.suggest_batch(list(texts)).filter(limit, threshold)

    def seen_subjects(self):
        """Training frequency per subject (None when the project was never trained)."""
        return self.backend.seen_subjects()

    def clear(self, wait: bool = False) -> bool:
        """Remove the trained model; True if there was one. A training in
        progress is never removed: BusyError, or with `wait` wait for it."""
        with self.lock.hold(wait=wait):
            self.unload()
            return remove_directory(self.model_dir, self.lock)

    def check(self) -> None:
        """Raise a ConfigError when the project's settings are invalid."""
        _ = self.backend
        if self.config.vocab not in self.projects.vocab_ids():
            raise ConfigError(
                f"Project '{self.id}': vocabulary '{self.config.vocab}' is neither "
                "loaded "
                "nor configured with a [vocab:ID] source"
            )
