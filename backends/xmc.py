"""Extreme multi-label classification over TF-IDF features, with omikuji.

omikuji (Rust) implements the Parabel and Bonsai label trees that Annif's
best single backend uses. Presets:

- `auto` (the default): `flat` while the flat layout's work, training
  documents x distinct subjects, is at most `FLAT_WORK_LIMIT` (20 million:
  yso-kirjastonhoitaja's 2.6k documents x 4k subjects is 10 million and trains
  flat in about 20 s), `balanced` beyond it. Flat training grows with that
  product (one classifier per subject, each against every document):
  10k documents x 15k subjects took 338 s flat against 30 s for Bonsai, and a
  catalogue of 200k documents would take days. The choice is printed when
  training and saved in the manifest (`info.layout`), which
  `indexer show-project` shows.
- `flat`: one level, so every subject has its own linear classifier trained
  against all documents (one-vs-rest). The most accurate layout while the
  training set is small (measured on yso-kirjastonhoitaja, 2.6k documents:
  F1@5 0.36 against 0.33 for Bonsai) and still fast up to ~10k subjects.
  It is trained here with liblinear (scikit-learn), the same L2-loss SVM
  omikuji solves, with a seeded coordinate order: retraining on the same data
  gives the same scores, with any number of jobs (processes: liblinear's
  generator is one per process). omikuji seeds its solvers from the operating
  system, so the tree presets below differ slightly from run to run.
- `balanced`: Bonsai's wide trees (100 children per node), but each split
  makes clusters of equal size, and a node splits again while it holds
  omikuji's `min_branch_size` (100) subjects or more, so no leaf holds more.
  A leaf trains one classifier per subject against every document of any of
  its subjects, so its cost is subjects x documents: with `bonsai`'s
  unbalanced clusters and depth 3 the Zipf-distributed subjects of a
  catalogue gather in a few leaves of up to 1,600 subjects (the synthetic M
  catalogue: 78% of the classifier work in the leaves), and training grew as
  documents^2.2 (25k -> 50k documents of the synthetic L catalogue, one
  thread: 245 s -> 1,156 s). `balanced` bounds every leaf, so the work is
  documents x depth and grows near-linearly, with the same F1@5.
- `bonsai`: shallow, wide, unbalanced trees (Khandagale et al. 2020), Annif's
  settings; for comparisons with Annif.
- `parabel`: deep balanced binary trees (Prabhu et al. 2018).

The model is omikuji's own directory (settings JSON and CBOR trees, no
pickle), or for `flat` the weight matrix as npz; the TF-IDF terms are
JSON/npy and the label map an npz.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from indexer.backend import ASSOCIATIVE, Backend
from indexer.corpus import indexed_texts
from indexer.errors import IndexerError, InputError
from indexer.features import TfidfFeatures
from indexer.memory import (
    available_memory,
    return_freed_memory,
    returning_freed_memory,
    total_memory,
)
from indexer.params import param
from indexer.storage import load_arrays, save_arrays
from indexer.suggestion import SuggestionBatch

# omikuji hyper-parameters of each preset (`bonsai`: Annif's documented settings)
PRESETS = {
    "auto": {},  # flat or balanced, chosen from the training data: `choose_layout`
    "flat": {"n_trees": 1, "max_depth": 1},
    "balanced": {
        "cluster_balanced": True,
        "cluster_k": 100,
        # deep enough that omikuji stops only at `min_branch_size` subjects
        "max_depth": 20,
        "collapse_every_n_layers": 0,
        "n_trees": 3,
    },
    "bonsai": {
        "cluster_balanced": False,
        "cluster_k": 100,
        "max_depth": 3,
        "collapse_every_n_layers": 0,
        "n_trees": 3,
    },
    "parabel": {
        "cluster_balanced": True,
        "cluster_k": 2,
        "max_depth": 20,
        "collapse_every_n_layers": 0,
        "n_trees": 3,
    },
}
TREE_PARAMS = ("cluster_balanced", "cluster_k", "max_depth", "collapse_every_n_layers")
MODEL_DIR = "omikuji"
WEIGHTS = "weights.npz"
# liblinear settings omikuji uses (its defaults), kept for the flat layout
LINEAR_EPS = 0.1
LINEAR_MAX_ITER = 20
# by default, trees train together only while the estimate for them stays
# within this share of the machine's memory (and within what is free):
# together they save 10-15% of the time, and the memory they add grows with
# the training data (2 trees at once against one at a time, 2 cores: 0.26 GB
# more at 50k documents, 0.8 GB at 200k, 3 GB at 1M; docs/backends/xmc.md)
TREES_MEMORY_SHARE = 1 / 3
# `auto` trains flat up to this many (training documents x distinct subjects);
# flat training time grows with it (about 2 s per million on one core)
FLAT_WORK_LIMIT = 20_000_000


def choose_layout(preset: str, documents: int, subjects: int) -> str:
    """The layout a preset trains: `auto` is `flat` while documents x subjects
    is at most `FLAT_WORK_LIMIT`, else `balanced` (whose training grows
    near-linearly with the documents, where `bonsai`'s grows as their square);
    the others are themselves."""
    if preset != "auto":
        return preset
    return "flat" if documents * subjects <= FLAT_WORK_LIMIT else "balanced"


@dataclass
class XmcParams:
    preset: str = param(
        "auto",
        "label tree layout: auto (flat on small training data, balanced beyond), "
        "flat (one-vs-rest), balanced (wide, equal clusters, leaves under 100 "
        "subjects), bonsai (shallow, wide; Annif's), parabel (deep, binary)",
        choices=list(PRESETS),
    )
    ngram: int = param(1, "word n-grams: 1 = words, 2 = words and bigrams", min=1)
    min_df: int = param(1, "ignore terms in fewer training documents", min=1)
    max_features: int = param(500_000, "keep at most this many terms", min=1)
    cluster_balanced: bool | None = param(
        None, "balanced 2-means clustering of labels (default: the preset's)"
    )
    cluster_k: int | None = param(
        None, "children per tree node (default: the preset's)", min=2
    )
    max_depth: int | None = param(
        None, "maximum tree depth (default: the preset's)", min=1
    )
    collapse_every_n_layers: int | None = param(
        None, "collapse tree layers, AttentionXML-style (default: the preset's)", min=0
    )
    n_trees: int | None = param(
        None, "trees in the forest (default: the preset's)", min=1
    )
    trees_at_once: int = param(
        0,
        "label trees trained at the same time (0: one per core used, fewer "
        "where they would take more than a third of the memory or more than "
        "is free); each holds its part of the forest in memory until saved",
        min=0,
    )
    linear_c: float = param(1.0, "inverse regularisation of the classifiers", min=1e-6)
    weight_threshold: float = param(
        0.05, "classifier weights below this are pruned (smaller models)", min=0.0
    )
    beam_size: int = param(10, "tree nodes kept per level when suggesting", min=1)
    candidates: int = param(100, "subjects kept per document", min=1)
    seed: int = param(0, "seed of the flat layout's solver (same seed, same model)")


class XmcBackend(Backend):
    """omikuji label trees (or a flat one-vs-rest layer) over TF-IDF features."""

    name = "xmc"
    kind = ASSOCIATIVE
    tokenizes = True
    Params = XmcParams
    #: parameters read only when suggesting (cheap to tune with `indexer hyperopt`)
    search_space: ClassVar[dict] = {"beam_size": [5, 10, 20, 40]}

    def hyper_params(self, n_labels: int, layout: str | None = None) -> dict:
        """omikuji hyper-parameters: the layout (`auto` resolved, else the
        preset), overridden by explicit params."""
        p = self.params
        layout = layout or choose_layout(p.preset, 0, n_labels)
        values = dict(PRESETS[layout])
        for key in (*TREE_PARAMS, "n_trees"):
            if getattr(p, key) is not None:
                values[key] = getattr(p, key)
        if layout == "flat":
            # a node with fewer labels than this becomes leaves: all of them
            values["min_branch_size"] = max(n_labels, 2) + 1
            values.pop("max_depth")
        values["linear_c"] = p.linear_c
        values["linear_weight_threshold"] = p.weight_threshold
        return values

    # -- training --------------------------------------------------------
    def _train(self, corpus, directory: Path, jobs: int) -> dict:
        subjects: list[list[int]] = []
        features = TfidfFeatures(
            self.project.language,
            ngram=self.params.ngram,
            analyzer=str(self.project.analyzer_spec),
        )
        x = features.fit_transform(
            indexed_texts(corpus, subjects, "Vectorising"),
            min_df=self.params.min_df,
            max_features=self.params.max_features,
        )
        features.save(directory)
        terms = len(features.terms)
        del features  # the vocabulary of terms is saved, not needed again
        subjects = [sorted(set(s)) for s in subjects]
        labels = np.unique(np.concatenate([np.asarray(s) for s in subjects]))
        save_arrays(directory / "labels.npz", {"labels": labels.astype(np.int64)})
        layout = choose_layout(self.params.preset, len(subjects), len(labels))
        if self.params.preset == "auto":
            print(
                f"Layout: {layout} ({len(subjects)} documents x {len(labels)} "
                f"subjects = {len(subjects) * len(labels):,} "
                f"{'<=' if layout == 'flat' else '>'} {FLAT_WORK_LIMIT:,})",
                file=sys.stderr,
            )
        info = {"terms": terms, "subjects": len(labels), "layout": layout}
        if layout == "flat" and not self._tree_overrides():
            examples = self._train_flat(x, subjects, labels, directory, jobs)
            engine = {"solver": "liblinear", "seed": self.params.seed}
            return {**info, "examples": examples, "linear": engine}
        # in the model's work directory, not /tmp (a RAM disk on some systems,
        # 1.3 GB at a million documents): a killed training leaves it where
        # the next training removes leftovers
        with tempfile.TemporaryDirectory(prefix=".train-", dir=directory) as tmp:
            data = Path(tmp) / "train.txt"
            examples = write_libsvm(data, x, subjects, labels)
            size = TrainingSize(examples, int(x.nnz), len(labels))
            # omikuji reads the file into memory of its own (twice: its
            # Python binding copies the data set): drop this process's copy
            del x, subjects
            return_freed_memory()
            if examples == 0:
                raise InputError(_NO_TERMS.format(min_df=self.params.min_df))
            engine = self._train_trees(data, size, directory, jobs, layout)
        return {**info, "examples": examples, "omikuji": engine}

    def _tree_overrides(self) -> bool:
        """Whether tree settings were given (then omikuji builds the layout)."""
        return any(
            getattr(self.params, key) is not None for key in (*TREE_PARAMS, "n_trees")
        )

    def _train_flat(self, x, subjects, labels, directory: Path, jobs: int) -> int:
        """One seeded L2-loss linear SVM per subject (omikuji's flat model)."""
        x = x.tocsr()
        has_terms = np.diff(x.indptr) > 0
        if not has_terms.any():
            raise InputError(_NO_TERMS.format(min_df=self.params.min_df))
        x = with_bias(x[has_terms])
        subjects = [s for s, keep in zip(subjects, has_terms, strict=True) if keep]
        print(
            f"Training one linear classifier for each of {len(labels)} subjects on "
            f"{x.shape[0]} documents",
            file=sys.stderr,
        )
        targets = target_columns(subjects, labels)
        p = self.params
        columns = fit_classifiers(
            x, targets, p.linear_c, p.weight_threshold, p.seed, jobs
        )
        import scipy.sparse as sp

        indptr = np.concatenate([[0], np.cumsum([len(k) for k, _ in columns])])
        weights = sp.csc_matrix(
            (
                np.concatenate([v for _, v in columns]),
                np.concatenate([k for k, _ in columns]),
                indptr,
            ),
            shape=(x.shape[1], len(labels)),
        )
        save_arrays(directory / WEIGHTS, {"weights": weights})
        return int(x.shape[0])

    def _train_trees(
        self, data: Path, size: TrainingSize, directory: Path, jobs: int, layout: str
    ) -> dict:
        """omikuji's label trees, trained `trees_at_once` at a time (by
        default one per core, fewer where they would take more than a third
        of the machine's memory or more than is free), each group saved when
        done (omikuji adds trees to the forest saved in a directory): memory
        holds the trees in training, not the whole forest, which grows with
        the training data (3.4 GB on disk for 1M documents). Trees trained
        together share the cores; a tree trained alone spreads its nodes
        over them."""
        import omikuji
        from tqdm import tqdm

        hyper = self.hyper_params(size.subjects, layout)
        hp = omikuji.Model.default_hyper_param()
        for key, value in hyper.items():
            setattr(hp, key, value)
        n_trees, jobs = hyper["n_trees"], max(jobs, 1)
        budget = min(available_memory(), int(total_memory() * TREES_MEMORY_SHARE))
        at_once = self.params.trees_at_once or size.trees_that_fit(budget, most=jobs)
        at_once = min(n_trees, at_once)
        print(
            f"Training {n_trees} {layout} label tree{'s' if n_trees > 1 else ''} "
            f"({at_once} at a time, about {size.peak_bytes(at_once) / 2**30:.1f} "
            f"GB) for {size.subjects} subjects on {size.examples} documents",
            file=sys.stderr,
        )
        with tqdm(total=n_trees, desc="Label trees", disable=None) as bar:
            for first in range(0, n_trees, at_once):
                hp.n_trees = min(at_once, n_trees - first)
                with quiet_native_output(hide_progress=True), returning_freed_memory():
                    trees = omikuji.Model.train_on_data(str(data), hp, n_threads=jobs)
                    trees.save(str(directory / MODEL_DIR))
                del trees
                bar.update(hp.n_trees)
        return hyper

    # -- suggesting ------------------------------------------------------
    def _load(self, directory: Path | None, manifest: dict | None) -> None:
        self._features = TfidfFeatures.load(directory)
        self._labels = load_arrays(directory / "labels.npz")["labels"]
        self._weights = self._model = None
        if (directory / WEIGHTS).is_file():
            self._weights = load_arrays(directory / WEIGHTS)["weights"]
            return
        import omikuji

        with quiet_native_output():
            self._model = omikuji.Model.load(str(directory / MODEL_DIR))

    def _suggest_batch(self, texts: list[str]) -> SuggestionBatch:
        x = self._features.transform(texts)
        x.sort_indices()
        top_k = min(self.params.candidates, len(self._labels))
        if self._weights is not None:  # omikuji keeps beam_size of a flat leaf
            return self._suggest_flat(x, min(top_k, self.params.beam_size))
        rows = []
        for i in range(x.shape[0]):
            start, end = x.indptr[i], x.indptr[i + 1]
            if start == end:  # no known term: nothing to go on
                rows.append(((), ()))
                continue
            pairs = list(
                zip(
                    x.indices[start:end].tolist(),
                    x.data[start:end].tolist(),
                    strict=True,
                )
            )
            out = self._model.predict(
                pairs, beam_size=self.params.beam_size, top_k=top_k
            )
            rows.append(
                (
                    self._labels[[label for label, _ in out]],
                    [score for _, score in out],
                )
            )
        return SuggestionBatch.from_rows(rows, len(self.project.vocab))

    def _suggest_flat(self, x, top_k: int) -> SuggestionBatch:
        """omikuji's flat scores: exp(-max(0, 1 - w.x)^2) of every classifier."""
        no_terms = np.diff(x.indptr) == 0
        if self._weights.shape[0] == x.shape[1] + 1:  # trained with a bias term
            x = with_bias(x)
        margins = np.asarray((x @ self._weights).todense(), dtype=np.float32)
        scores = np.exp(-np.square(np.maximum(0.0, 1.0 - margins)))
        scores[no_terms] = 0.0  # no known term: nothing to go on
        dense = np.zeros((x.shape[0], len(self.project.vocab)), dtype=np.float32)
        dense[:, self._labels] = scores
        batch = SuggestionBatch.from_dense(dense, top_k)
        batch.matrix.eliminate_zeros()
        return batch


_NO_TERMS = (
    "No training document has a term that occurs in at least min_df = {min_df} "
    "documents"
)


@dataclass(frozen=True)
class TrainingSize:
    """The size of omikuji's training data, and the memory its training
    takes by that size: what one tree in training holds (omikuji's two copies
    of the documents, its index of them, every subject's centroid, the tree
    being built), and what each tree trained beside it adds. Fitted to the
    peaks measured at 50k documents (2 trees at once) and 1M documents (1 and
    2), plus 10% (docs/backends/xmc.md): an estimate to choose
    `trees_at_once` by, not a bound."""

    examples: int
    weights: int  # non-zero feature weights of the documents
    subjects: int

    BYTES_PER_WEIGHT: ClassVar[int] = 15
    BYTES_PER_SUBJECT: ClassVar[int] = 11_100
    BYTES_PER_WEIGHT_EACH_TREE: ClassVar[int] = 38

    def peak_bytes(self, trees: int) -> int:
        """Memory that training `trees` trees at once takes, estimated."""
        return (
            self.weights
            * (self.BYTES_PER_WEIGHT + trees * self.BYTES_PER_WEIGHT_EACH_TREE)
            + self.subjects * self.BYTES_PER_SUBJECT
        )

    def trees_that_fit(self, free: int, most: int) -> int:
        """How many trees, up to `most`, fit in `free` bytes trained at once:
        at least one."""
        trees = 1
        while trees < most and self.peak_bytes(trees + 1) <= free:
            trees += 1
        return trees


def with_bias(x):
    """`x` with a constant feature appended, as omikuji adds to every example:
    the bias of each classifier, regularised like the other weights."""
    import scipy.sparse as sp

    return sp.hstack([x, np.ones((x.shape[0], 1), np.float32)], format="csr")


def fit_classifiers(
    x, targets, c: float, threshold: float, seed: int, jobs: int
) -> list:
    """(kept features, their weights) of a classifier for each column of
    `targets` (documents x labels, CSC), in `jobs` processes: the same
    weights whatever `jobs` is."""
    fit = (x, targets, c, threshold, seed)
    labels = targets.shape[1]
    if jobs <= 1 or labels <= 1:
        return fit_columns(range(labels), *fit)
    # processes, not threads: liblinear draws its coordinate order from one
    # generator per process, and fits in threads interleave their draws
    # (weights that differ from run to run)
    from joblib import Parallel, delayed
    from joblib.externals.loky import get_reusable_executor
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    parts = np.array_split(np.arange(labels), min(labels, 8 * jobs))
    try:
        done = Parallel(n_jobs=jobs, backend="loky")(
            delayed(fit_columns)(part, *fit) for part in parts
        )
    except TerminatedWorkerError:
        raise IndexerError(
            f"A process fitting the flat layout's classifiers ({jobs} at once) "
            "died: out of memory, or killed. Nothing was saved; -j 1 fits one "
            "classifier at a time, in less memory"
        ) from None
    finally:
        # the processes end now, not idle for minutes holding memory, nor
        # joined at exit, where a Ctrl-C then printed a traceback
        get_reusable_executor().shutdown(wait=True)
    return [column for part in done for column in part]


def fit_columns(columns, x, targets, c: float, threshold: float, seed: int) -> list:
    """(kept features, their weights) of the classifier of each of `columns`
    of `targets` (documents x labels, CSC)."""
    fitted = []
    for column in columns:
        y = np.zeros(x.shape[0], dtype=bool)
        y[targets.indices[targets.indptr[column] : targets.indptr[column + 1]]] = 1
        weights = fit_linear(x, y, c, threshold, seed)
        kept = np.flatnonzero(weights)
        fitted.append((kept, weights[kept].astype(np.float32)))
    return fitted


def fit_linear(x, y: np.ndarray, c: float, threshold: float, seed: int) -> np.ndarray:
    """Weights of an L2-regularised L2-loss linear SVM without bias (liblinear's
    dual solver, omikuji's settings), pruned below `threshold`; the coordinate
    order is seeded, so the same data always gives the same weights."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    model = LinearSVC(
        C=c,
        loss="squared_hinge",
        dual=True,
        tol=LINEAR_EPS,
        max_iter=LINEAR_MAX_ITER,
        fit_intercept=False,
        random_state=seed,
    )
    if y.all() or not y.any():  # one class only: nothing to separate
        return np.zeros(x.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # omikuji's budget
        model.fit(x, y)
    weights = model.coef_.ravel()
    weights[np.abs(weights) <= threshold] = 0.0
    return weights


def target_columns(subjects: list[list[int]], labels: np.ndarray):
    """Documents x labels targets as a sparse CSC matrix: column j lists the
    documents of `labels[j]` (a dense array would be documents x subjects
    bytes: 40 GB for 200k documents and 200k subjects)."""
    import scipy.sparse as sp

    counts = np.fromiter((len(s) for s in subjects), np.int64, len(subjects))
    rows = np.repeat(np.arange(len(subjects)), counts)
    flat = np.fromiter((v for s in subjects for v in s), np.int64, int(counts.sum()))
    columns = np.searchsorted(labels, flat)
    return sp.csc_matrix(
        (np.ones(len(flat), dtype=bool), (rows, columns)),
        shape=(len(subjects), len(labels)),
    )


def write_libsvm(path: Path, x, subjects: list[list[int]], labels: np.ndarray) -> int:
    """Write documents in the Extreme Classification Repository format omikuji
    reads (`n_docs n_features n_labels` header, then `l1,l2 f:v f:v ...`);
    documents without any feature are left out. Returns the documents written."""
    x = x.tocsr()
    x.sort_indices()
    position = {int(v): i for i, v in enumerate(labels)}
    written = int((np.diff(x.indptr) > 0).sum())
    # streamed: the lines of a whole catalogue would be gigabytes of strings
    with open(path, "w", encoding="ascii") as f:
        f.write(f"{written} {x.shape[1]} {len(labels)}\n")
        for i, doc_subjects in enumerate(subjects):
            start, end = x.indptr[i], x.indptr[i + 1]
            if start == end:
                continue
            terms = " ".join(
                f"{c}:{v:.6g}"
                for c, v in zip(x.indices[start:end], x.data[start:end], strict=True)
            )
            f.write(",".join(str(position[s]) for s in doc_subjects) + f" {terms}\n")
    return written


@contextlib.contextmanager
def quiet_native_output(hide_progress: bool = False) -> Iterator[None]:
    """Keep omikuji's Rust logger off stdout, which carries only results, and,
    with `hide_progress`, its progress bars off stderr unless that is a
    terminal. The file descriptors are process-wide: loading (in a server,
    next to other requests) leaves stderr alone, and a server's stdout carries
    nothing."""
    sys.stdout.flush()
    sys.stderr.flush()
    hide_stderr = hide_progress and not sys.stderr.isatty()
    targets = (1, 2) if hide_stderr else (1,)
    saved = {fd: os.dup(fd) for fd in targets}
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in targets:
            os.dup2(devnull, fd)
        yield
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)
