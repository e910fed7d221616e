"""Convert an Annif projects file (projects.cfg, projects.toml or projects.d/)
into this toolkit's configuration.

Every Annif key is accounted for: it is mapped (and the output says from
what, in a comment above the key), or it has no counterpart, and then the
output and the returned notes say so and name the closest equivalent.
Nothing is dropped silently.
"""

from __future__ import annotations

import configparser
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from indexer.config import check_id, project_config
from indexer.errors import ConfigError, InputError
from indexer.registry import BUILTIN, DISTRIBUTION
from indexer.textfile import decode_text

#: an Annif projects file is a few kilobytes; anything far larger is not one
MAX_FILE_BYTES = 4 * 1024 * 1024
#: the sections of our configuration that are not projects (indexer/config.py)
RESERVED_SECTIONS = ("indexer",)

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
_LINEAR = "on small data it trains flat: a linear classifier per subject"
#: Annif backends without a counterpart -> (closest backend here, or None; why)
CLOSEST = {
    "fasttext": ("xmc", _LINEAR),
    "svc": ("xmc", _LINEAR),
    "vw_multi": ("xmc", _LINEAR),
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
    #: what is written, key -> value (the lines hold them too, with comments)
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    def set(self, key: str, value: str, origin: str) -> None:
        self.settings[key] = value
        self.lines += [f"; {origin}", f"{key} = {value}"]

    def replace(self, key: str, value: str) -> None:
        """Change a setting already written (its origin comment stays)."""
        old = f"{key} = {self.settings[key]}"
        self.lines[self.lines.index(old)] = f"{key} = {value}"
        self.settings[key] = value

    def leave_out(self, reason: str) -> None:
        """The project cannot be converted: it is written commented out."""
        self.backend = None
        self.note(f"{reason}; the project is left out")

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


def _read_text(path: Path) -> str:
    """The file as text: a regular file of at most MAX_FILE_BYTES, strictly
    UTF-8 (a byte order mark is dropped); else an InputError saying which."""
    what = f"Annif projects file '{path}'"
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise InputError(f"Cannot read {what}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(
                f"{what} is not a regular file (a device, pipe or socket): give "
                "a projects.cfg, a projects.toml or a projects.d directory"
            )
        try:
            data = f.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise InputError(f"Cannot read {what}: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise InputError(
            f"{what} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB: it is no "
            "Annif projects file"
        )
    return decode_text(data, what)


def _read_cfg(path: Path) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(_read_text(path), source=str(path))
    except configparser.Error as exc:
        raise InputError(f"Cannot read {path}: {' '.join(str(exc).split())}") from None
    return {s: dict(parser.items(s)) for s in parser.sections()}


def _read_toml(path: Path) -> dict[str, dict[str, str]]:
    import tomllib

    try:
        data = tomllib.loads(_read_text(path))
    except tomllib.TOMLDecodeError as exc:
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
    """Our settings for each Annif project, with a note for whatever differs;
    a project our configuration would refuse is left out, and so is every
    ensemble source that is not a converted project."""
    converted = [convert_project(pid, values) for pid, values in annif.items()]
    _check_sources(converted)
    return converted


def convert_project(project_id: str, values: dict[str, str]) -> ConvertedProject:
    """One Annif project section -> our section (lines) and notes."""
    values, several_lines = _one_line_values(values)
    annif_backend = values.pop("backend", "").lower()
    project = ConvertedProject(
        project_id, annif_backend, None, values.get("language", "")
    )
    for key in several_lines:
        project.note(
            f"{key} = {values.get(key, annif_backend)}: the value is on several "
            "lines in the Annif file; it is written as one line"
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
    _check_loadable(project)
    return project


def _one_line(text: str) -> str:
    """`text` on one line: its lines stripped and joined by spaces. Every line
    written goes through it, so no value can start a line (or a section) of
    its own in the output."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _one_line_values(values: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Keys (lower case) and values on one line each, and the keys whose
    value was on several lines (configparser's indented continuation lines)."""
    out, several = {}, []
    for key, value in values.items():
        key = _one_line(key).lower()
        out[key] = _one_line(value)
        if len([part for part in str(value).splitlines() if part.strip()]) > 1:
            several.append(key)
    return out, several


def _check_loadable(project: ConvertedProject) -> None:
    """Leave the project out when our configuration would refuse it: its id,
    vocabulary id, language, limit, threshold or access, as indexer/config.py
    checks them when it reads the converted file."""
    if not project.enabled:
        return
    if project.id in RESERVED_SECTIONS:
        project.leave_out(
            f"[{project.id}] is the section of this toolkit's own settings here, "
            "not a project: rename the project"
        )
        return
    try:
        check_id(project.id, "Project")
        project_config(project.id, project.settings)
    except ConfigError as exc:
        project.leave_out(exc.message.removeprefix(f"Project '{project.id}': "))


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
    from indexer.analyzer import (
        ANALYZERS,
        VOIKKO_DEBIAN,
        default_analyzer,
        parse_analyzer,
    )

    try:
        spec = parse_analyzer(analyzer)
    except ConfigError as exc:
        project.note(
            f"analyzer = {analyzer} cannot be converted ({exc.message}); the "
            "default, Snowball stemming in the project language, is used"
        )
        return
    if spec == default_analyzer(project.language):
        project.lines.append(
            f"; Annif: analyzer = {analyzer} (Snowball stemming in the project "
            "language is the default here)"
        )
        return
    extra = ANALYZERS[spec.name][1]
    needs = f"; needs pip install '{DISTRIBUTION}[{extra}]'" if extra else ""
    if spec.name == "voikko":
        needs += f" and apt-get install {VOIKKO_DEBIAN}"
    project.set("analyzer", str(spec), f"Annif: analyzer = {analyzer}{needs}")


def _sources(project: ConvertedProject, sources: str) -> None:
    origin = f"Annif: sources = {sources}"
    if project.backend == "calibrated" and ":" in sources:
        origin += " (the fusion learns the weights; these are not used)"
    listed = ", ".join(s.strip() for s in sources.split(",") if s.strip())
    project.set("sources", listed, origin)
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


def _source_id(source: str) -> str:
    return source.split(":")[0].strip()


def _check_sources(projects: list[ConvertedProject]) -> None:
    """Ensembles keep the sources that are converted projects, and say which
    they lost; one left without a source is left out, and so lost by the
    ensembles that use it (repeated until nothing changes)."""
    in_file = {p.id for p in projects}
    changed = True
    while changed:
        converted = {p.id for p in projects if p.enabled}
        changed = False
        for project in projects:
            if project.enabled and "sources" in project.settings:
                changed |= _keep_converted_sources(project, converted, in_file)


def _keep_converted_sources(
    project: ConvertedProject, converted: set[str], in_file: set[str]
) -> bool:
    """Drop the sources of `project` that are not converted projects (True
    when it lost any)."""
    sources = [s.strip() for s in project.settings["sources"].split(",")]
    kept = [s for s in sources if _source_id(s) in converted - {project.id}]
    if kept == sources:
        return False
    dropped = [_source_id(s) for s in sources if s not in kept]
    left_out = [s for s in dropped if s in in_file and s != project.id]
    unknown = [s for s in dropped if s not in in_file]
    if left_out:
        project.note(f"source(s) {', '.join(left_out)} left out: not converted")
    if unknown:
        project.note(
            f"source(s) {', '.join(repr(s) for s in unknown)} left out: no such "
            "project in the Annif file"
        )
    if project.id in dropped:
        project.note(f"source {project.id} left out: it is the project itself")
    if kept:
        project.replace("sources", ", ".join(kept))
    else:
        project.leave_out("no source is left")
    return True


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


def _printable(path: Path) -> str:
    """The path as UTF-8 text (a name that is not UTF-8 gets \\x escapes)."""
    return (
        str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    )


def render(projects: list[ConvertedProject], source: Path, vocabs: dict) -> str:
    """The converted configuration as projects.cfg text."""
    out = [
        f"; Converted from the Annif projects file {_printable(source)} by "
        "`indexer import-annif`.",
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
    return "\n".join(_one_line(line) for line in out)
