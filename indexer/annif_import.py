"""Convert an Annif projects file (projects.cfg, projects.toml or projects.d/)
into this toolkit's configuration.

Every Annif key is accounted for: it is mapped (and the output says from
what, in a comment above the key), or it has no counterpart, and then the
output and the returned notes say so and name the closest equivalent.
Nothing is dropped silently.
"""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass, field
from pathlib import Path

from indexer.analyzer import SNOWBALL
from indexer.errors import InputError
from indexer.registry import BUILTIN

#: Annif backend -> (backend here, why it corresponds)
BACKENDS = {
    "tfidf": ("tfidf", "TF-IDF subject centroids, as Annif's"),
    "omikuji": ("xmc", "the same omikuji label trees"),
    "mllm": ("lexical", "label matching with a learnt model, as MLLM"),
    "ensemble": ("ensemble", "weighted mean of the sources, as Annif's"),
    "nn_ensemble": (
        "calibrated",
        "a fusion learnt on held-out documents; a calibrated logistic "
        "combination instead of a neural network",
    ),
    "pav": (
        "calibrated",
        "per-source isotonic calibration (PAV is isotonic regression), then a "
        "learnt combination",
    ),
    "dummy": ("dummy", "a fixed suggestion, for tests"),
}
#: Annif backends without a counterpart -> (closest backend here, or None; why)
CLOSEST = {
    "fasttext": ("xmc", "its default preset, flat, is a linear classifier per subject"),
    "svc": ("xmc", "its default preset, flat, is a linear classifier per subject"),
    "vw_multi": ("xmc", "its default preset, flat, is a linear classifier per subject"),
    "xtransformer": ("llm_head", "a transformer with a classification head"),
    "stwfsa": ("lexical", "matching the vocabulary's labels"),
    "yake": ("lexical", "matching the vocabulary's labels"),
    "maui": ("lexical", "matching the vocabulary's labels"),
    "maui_http": ("lexical", "matching the vocabulary's labels"),
    "vw_ensemble": ("calibrated", "a fusion learnt on held-out documents"),
    "llm_ensemble": ("calibrated", "a fusion learnt on held-out documents"),
    "http": (None, "it forwards to another Annif server"),
}
#: Omikuji's own defaults (Parabel), which Annif uses unless told otherwise
OMIKUJI_DEFAULTS = {
    "cluster_balanced": "true",
    "cluster_k": "2",
    "max_depth": "20",
    "collapse_every_n_layers": "0",
}
BONSAI = {"cluster_balanced": "false", "cluster_k": "100", "max_depth": "3"}
COMMON_KEYS = ("name", "language", "vocab", "limit", "threshold", "access")
#: keys of an Annif backend with no counterpart -> the closest equivalent here
NO_COUNTERPART = {
    "mllm": {
        "min_samples": "lexical's trained scorer is gradient-boosted trees "
        "(`scorer`), sized for the corpus",
        "min_samples_leaf": "lexical's trees take at least 1% of the training "
        "candidates per leaf, up to 200 (`scorer`)",
        "max_leaf_nodes": "lexical's trees have 7 leaves each (`scorer`)",
        "max_samples": "lexical's trees are boosted on all candidates, "
        "not bagged (`scorer`)",
        "use_hidden_labels": "hiddenLabels are read as altLabels, so "
        "lexical always matches them",
    },
    "nn_ensemble": {
        "nodes": "the fusion is a logistic regression (`interactions` "
        "adds products of the sources' scores)",
        "dropout_rate": "the fusion's regularisation is chosen by "
        "cross-validation (`folds`)",
        "epochs": "the logistic fusion is fitted to convergence",
        "optimizer": "the logistic fusion is fitted to convergence",
        "lmdb_map_size": "the held-out scores are kept as npz",
        "learn-epochs": "`indexer learn` refits on all held-out scores",
    },
    "pav": {
        "min-docs": "every subject shares one calibration per source",
    },
}


@dataclass
class ConvertedProject:
    """One Annif project as lines of our configuration, and what to tell the user."""

    id: str
    annif_backend: str
    backend: str | None
    language: str = ""
    lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    def set(self, key: str, value: str, origin: str) -> None:
        self.lines += [f"; {origin}", f"{key} = {value}"]

    def note(self, message: str) -> None:
        """Something Annif had that is not here, or differs: shown and kept."""
        self.notes.append(message)
        self.lines.append(f"; NOTE: {message}")


def read_annif_projects(path: Path) -> dict[str, dict[str, str]]:
    """Project sections of an Annif projects.cfg, projects.toml or projects.d."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"Annif projects file '{path}' does not exist")
    files = (
        sorted(path.glob("*.cfg")) + sorted(path.glob("*.toml"))
        if path.is_dir()
        else [path]
    )
    if not files:
        raise InputError(f"Directory '{path}' contains no .cfg or .toml files")
    projects: dict[str, dict[str, str]] = {}
    for file in files:
        projects.update(_read_toml(file) if file.suffix == ".toml" else _read_cfg(file))
    if not projects:
        raise InputError(f"'{path}' defines no Annif projects")
    return projects


def _read_cfg(path: Path) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f, source=str(path))
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise InputError(f"Cannot read {path}: {' '.join(str(exc).split())}") from None
    return {s: dict(parser.items(s)) for s in parser.sections()}


def _read_toml(path: Path) -> dict[str, dict[str, str]]:
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"Cannot read {path}: {exc}") from None
    return {
        section: {k: _toml_value(v) for k, v in values.items()}
        for section, values in data.items()
        if isinstance(values, dict)
    }


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def convert_projects(annif: dict[str, dict[str, str]]) -> list[ConvertedProject]:
    """Our settings for each Annif project, with a note for whatever differs."""
    converted = [convert_project(pid, values) for pid, values in annif.items()]
    left_out = {p.id for p in converted if not p.enabled}
    for project in converted:
        if project.enabled and left_out:
            _drop_sources(project, left_out)
    return converted


def convert_project(project_id: str, values: dict[str, str]) -> ConvertedProject:
    """One Annif project section -> our section (lines) and notes."""
    values = {k.strip().lower(): v.strip() for k, v in values.items()}
    annif_backend = values.pop("backend", "").lower()
    project = ConvertedProject(
        project_id, annif_backend, None, values.get("language", "")
    )
    if not _choose_backend(project):
        project.lines += [f"{key} = {value}" for key, value in values.items()]
        return project
    for key in COMMON_KEYS:
        if key in values:
            _common_key(project, key, values.pop(key))
    _analyzer(project, values.pop("analyzer", None))
    if "sources" in values and project.backend in ("ensemble", "calibrated"):
        _sources(project, values.pop("sources"))
    if project.annif_backend == "omikuji":
        _omikuji(project, values)
    if project.backend == "tfidf":
        project.lines.append(
            "; ngram = 2 (words and word bigrams) is the default here; Annif's "
            "tfidf uses words only: set ngram = 1 to match it"
        )
    if project.backend == "dummy" and "uri" in values:
        project.set("uri", values.pop("uri"), "Annif: uri")
    for key, value in values.items():
        project.note(_unmapped(project, key, value))
    return project


def _choose_backend(project: ConvertedProject) -> bool:
    """Set our backend (and its origin line); False when the project is left out."""
    name = project.annif_backend
    if name in BACKENDS:
        project.backend, why = BACKENDS[name]
        project.set("backend", project.backend, f"Annif: backend = {name} ({why})")
        return True
    if name in CLOSEST:
        closest, why = CLOSEST[name]
        if closest is None:
            project.note(
                f"Annif backend '{name}' has no counterpart here ({why}); the "
                "project is left out: configure the project it forwards to here"
            )
            return False
        project.backend = closest
        project.note(
            f"Annif backend '{name}' does not exist here; converted to the closest "
            f"equivalent, {closest} ({why}): not the same algorithm, check its "
            "parameters and train it"
        )
        project.set("backend", closest, f"Annif: backend = {name}")
        return True
    project.note(
        f"Annif backend '{name or '(none)'}' is unknown; the project is left out. "
        f"Backends here: {', '.join(BUILTIN)}"
    )
    return False


def _common_key(project: ConvertedProject, key: str, value: str) -> None:
    if key != "vocab":
        project.set(key, value, f"Annif: {key}")
        return
    match = re.fullmatch(r"([^()\s]+)\s*(?:\((?:lang\s*=\s*)?([^)]*)\))?", value)
    vocab_id, label_language = match.groups("") if match else (value, "")
    project.set(
        "vocab",
        vocab_id,
        f"Annif: vocab = {value} (load it with `indexer load-vocab {vocab_id} FILE`)",
    )
    if label_language and label_language.strip() != project.language:
        project.note(
            f"vocab = {value}: labels are matched and shown in the project "
            f"language ({project.language}) here; the closest equivalent for another "
            "label language is `label_language` of the embed backend"
        )


def _analyzer(project: ConvertedProject, analyzer: str | None) -> None:
    if analyzer is None:
        return
    language = project.language.split("-")[0].lower()
    name, _, args = analyzer.partition("(")
    first_arg = args.rstrip(")").split(",")[0].strip().lower()
    expected = SNOWBALL.get(language)
    if name.strip().lower() == "snowball" and first_arg == expected:
        project.lines.append(
            f"; Annif: analyzer = {analyzer} (Snowball stemming in the project "
            f"language is what every backend here does)"
        )
        return
    project.note(
        f"analyzer = {analyzer} has no counterpart: the closest equivalent is the "
        f"built-in Snowball stemming in the project language ({language}: "
        + (expected or "no Snowball stemmer, words are not stemmed")
        + ")"
    )


def _sources(project: ConvertedProject, sources: str) -> None:
    origin = f"Annif: sources = {sources}"
    if project.backend == "calibrated" and ":" in sources:
        origin += " (the fusion learns the weights; these are not used)"
    project.set("sources", ", ".join(s.strip() for s in sources.split(",")), origin)
    if project.annif_backend == "pav":
        project.set("calibration", "isotonic", "Annif: pav (pool adjacent violators)")


def _omikuji(project: ConvertedProject, values: dict[str, str]) -> None:
    given = {
        key: _bool_text(values.pop(key))
        for key in [*OMIKUJI_DEFAULTS, "min_df", "ngram"]
        if key in values
    }
    tree = {**OMIKUJI_DEFAULTS, **{k: v for k, v in given.items() if k in BONSAI}}
    bonsai = all(tree[k] == v for k, v in BONSAI.items())
    described = ", ".join(f"{k} = {v}" for k, v in given.items()) or "defaults"
    project.set(
        "preset",
        "bonsai" if bonsai else "parabel",
        f"Annif: omikuji {described} ("
        + ("Annif's Bonsai settings" if bonsai else "omikuji's Parabel defaults")
        + "; `preset = flat` is often better on a few thousand documents)",
    )
    preset = BONSAI if bonsai else OMIKUJI_DEFAULTS
    for key, value in given.items():
        if preset.get(key, OMIKUJI_DEFAULTS.get(key)) != value:
            project.set(key, value, f"Annif: {key}")


def _bool_text(value: str) -> str:
    lowered = value.strip().lower()
    return lowered if lowered in ("true", "false") else value.strip()


def _drop_sources(project: ConvertedProject, left_out: set[str]) -> None:
    """Ensembles lose the sources that were left out (and say so)."""
    for i, line in enumerate(project.lines):
        if not line.startswith("sources = "):
            continue
        sources = [s.strip() for s in line.partition("=")[2].split(",")]
        kept = [s for s in sources if s.split(":")[0].strip() not in left_out]
        if kept == sources:
            return
        dropped = [s.split(":")[0] for s in sources if s not in kept]
        project.note(f"source(s) {', '.join(dropped)} left out: not converted")
        if kept:
            project.lines[i] = "sources = " + ", ".join(kept)
        else:
            project.backend = None
            project.note("no source is left: the project is left out")
        return


def _unmapped(project: ConvertedProject, key: str, value: str) -> str:
    closest = NO_COUNTERPART.get(project.annif_backend, {}).get(key)
    if closest:
        return f"{key} = {value} has no counterpart; closest equivalent: {closest}"
    if key == "transform":
        return (
            f"transform = {value} has no counterpart: documents are used whole "
            "(closest equivalent: `max_length`, the tokens read by the knn, embed "
            "and llm backends)"
        )
    return (
        f"Annif setting {key} = {value} has no counterpart and is not used; the "
        f"parameters of {project.backend} here: {', '.join(_parameters(project))}"
    )


def _parameters(project: ConvertedProject) -> list[str]:
    import dataclasses

    from indexer.registry import get_backend_class

    params = get_backend_class(project.backend).Params
    return [f.name for f in dataclasses.fields(params)]


def render(projects: list[ConvertedProject], source: Path, vocabs: dict) -> str:
    """The converted configuration as projects.cfg text."""
    out = [
        f"; Converted from the Annif projects file {source} by `indexer import-annif`.",
        "; Each setting follows a comment naming the Annif setting it comes from;",
        "; NOTE lines name what has no counterpart here. Models are not converted:",
        "; train every project (an ensemble needs only its sources trained).",
        "",
    ]
    for vocab_id, vocab_source in vocabs.items():
        out += [f"[vocab:{vocab_id}]", f"source = {vocab_source}", ""]
    for project in projects:
        body = [f"[{project.id}]", *project.lines]
        if not project.enabled:
            body = [line if line.startswith(";") else f"; {line}" for line in body]
        out += [*body, ""]
    return "\n".join(out)
