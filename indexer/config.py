"""projects.cfg (and projects.d/*.cfg) -> project and vocabulary settings.

[indexer]              optional: data_dir = data
[vocab:yso]            optional: where `load-vocab` finds the vocabulary
source = yso.ttl
[yso-fi]               a project
language = fi
vocab = yso
backend = tfidf
analyzer = voikko(fi)  optional (default: snowball in the project language)
limit = 10             anything else is a backend parameter
"""

from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from indexer.errors import ConfigError, InputError, UsageError
from indexer.textfile import read_text

ENV_PROJECTS = "INDEXER_PROJECTS"
ENV_DATA_DIR = "INDEXER_DATA_DIR"
PROJECT_KEYS = (
    "name",
    "language",
    "vocab",
    "backend",
    "limit",
    "threshold",
    "access",
    "allow_learn",
    "analyzer",
)
ACCESS_LEVELS = ("public", "hidden", "private")
#: project and vocabulary ids: they name directories under the data directory
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
ID_RULE = "1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit"


def check_language_tag(language: str, where: str = "") -> str:
    """`language` when it looks like a language tag, else a ConfigError."""
    from indexer.analyzer import is_language_tag

    if not is_language_tag(language):
        raise ConfigError(
            f"{where}language '{language}' is not a language tag (like en, fi, pt-BR)"
        )
    return language


def check_id(value: str, what: str, where: str = "") -> str:
    """`value` when it is a valid project or vocabulary id, else a ConfigError."""
    if not ID_PATTERN.fullmatch(value):
        raise ConfigError(f"{where}{what} id '{value}' is not valid: use {ID_RULE}")
    return value


@dataclass
class VocabConfig:
    """Where a vocabulary comes from (optional: `load-vocab` can name a file)."""

    id: str
    source: Path | None = None
    language: str | None = None


@dataclass
class ProjectConfig:
    """One project section, with its backend parameters still as strings."""

    id: str
    name: str
    language: str
    vocab: str
    backend: str
    limit: int = 10
    threshold: float = 0.0
    access: str = "public"
    allow_learn: bool = False  # REST `learn` without the API key (Annif's key)
    #: how backends that tokenize split and normalise words (indexer.analyzer);
    #: empty: Snowball in the project language
    analyzer: str = ""
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class Config:
    """Everything read from the configuration files."""

    projects: dict[str, ProjectConfig]
    vocabs: dict[str, VocabConfig]
    data_dir: Path
    sources: list[Path]


def find_config_paths(explicit: str | os.PathLike | None = None) -> list[Path]:
    """Config files from --projects, $INDEXER_PROJECTS or the current directory;
    finding none is an error that says where it looked."""
    for candidate, origin in (
        (explicit, ""),
        (os.environ.get(ENV_PROJECTS), ENV_PROJECTS),
    ):
        if candidate:
            path = Path(candidate)
            named = f"{origin} = " if origin else ""
            if not path.exists():
                raise UsageError(
                    f"Project configuration '{named}{path}' does not exist"
                )
            paths = _expand(path)
            if not paths:
                raise UsageError(
                    f"Directory '{named}{path}' has no projects.cfg and no "
                    "projects.d/*.cfg"
                )
            return paths
    paths = _expand(Path.cwd())
    if not paths:
        raise UsageError(
            f"No project configuration found: no projects.cfg or projects.d/*.cfg "
            f"in {Path.cwd()}. Give one with --projects PATH or {ENV_PROJECTS}"
        )
    return paths


def _expand(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        paths = [path / "projects.cfg"] if (path / "projects.cfg").is_file() else []
        paths += (
            sorted((path / "projects.d").glob("*.cfg"))
            if (path / "projects.d").is_dir()
            else []
        )
        if not paths and path.name == "projects.d":
            paths = sorted(path.glob("*.cfg"))
        return paths
    return []


def load_config(explicit: str | os.PathLike | None = None) -> Config:
    """Read and validate all project configuration."""
    paths = find_config_paths(explicit)
    parser = configparser.ConfigParser(interpolation=None, default_section="__none__")
    parser.optionxform = str  # keep key case for error messages
    for path in paths:
        try:
            parser.read_string(read_text(path, "Configuration"), source=str(path))
        except InputError as exc:  # not UTF-8
            raise ConfigError(exc.message) from None
        except configparser.Error as exc:
            raise ConfigError(
                f"Cannot read {path}: {' '.join(str(exc).split())}"
            ) from None
    base = paths[0].parent if paths else Path.cwd()
    data_dir = Path(
        os.environ.get(ENV_DATA_DIR)
        or parser.get("indexer", "data_dir", fallback="data")
    )
    if not data_dir.is_absolute():
        data_dir = base / data_dir
    vocabs, projects = {}, {}
    for section in parser.sections():
        values = dict(parser.items(section))
        if section == "indexer":
            continue
        if section.startswith("vocab:"):
            vocab_id = check_id(
                section.partition(":")[2].strip(), "Vocabulary", f"[{section}]: "
            )
            source = values.get("source")
            vocabs[vocab_id] = VocabConfig(
                vocab_id,
                (base / source)
                if source and not Path(source).is_absolute()
                else (Path(source) if source else None),
                values.get("language")
                and check_language_tag(values["language"].strip(), f"[{section}]: "),
            )
        else:
            projects[section] = project_config(section, values)
    return Config(projects, vocabs, data_dir, paths)


def project_config(project_id: str, values: dict[str, str]) -> ProjectConfig:
    check_id(project_id, "Project", f"[{project_id}]: ")
    where = f"Project '{project_id}'"
    for key in ("language", "vocab", "backend"):
        if not values.get(key):
            raise ConfigError(f"{where}: the required setting '{key}' is missing")
    check_id(values["vocab"].strip(), "Vocabulary", f"{where}: ")
    check_language_tag(values["language"].strip(), f"{where}: ")
    access = values.get("access", "public").strip()
    if access not in ACCESS_LEVELS:
        raise ConfigError(
            f"{where}: access is '{access}'; valid choices: {', '.join(ACCESS_LEVELS)}"
        )
    try:
        limit = int(values.get("limit", 10))
        threshold = float(values.get("threshold", 0.0))
    except ValueError as exc:
        raise ConfigError(
            f"{where}: limit must be an integer and threshold a number ({exc})"
        ) from None
    if limit < 1 or not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"{where}: limit must be >= 1 and threshold between 0 and 1")
    allow_learn = values.get("allow_learn", "false").strip().lower()
    if allow_learn not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
        raise ConfigError(f"{where}: allow_learn must be true or false")
    analyzer = values.get("analyzer", "").strip()
    if analyzer:
        from indexer.analyzer import parse_analyzer

        parse_analyzer(analyzer, f"{where}: ")
    return ProjectConfig(
        id=project_id,
        name=values.get("name", project_id),
        language=values["language"].strip(),
        vocab=values["vocab"].strip(),
        backend=values["backend"].strip(),
        limit=limit,
        threshold=threshold,
        access=access,
        allow_learn=allow_learn in ("true", "yes", "1", "on"),
        analyzer=analyzer,
        params={k: v for k, v in values.items() if k not in PROJECT_KEYS},
    )
