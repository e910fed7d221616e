"""Every REST request and response, described once as pydantic models.

Requests are validated with these models (indexer/rest/input.py) and the
OpenAPI document is generated from them (indexer/rest/openapi.py), so the
server and its description cannot disagree. Field names follow Annif's REST
API; what Annif lacks is an extra field or parameter its clients never send.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    model_validator,
)

MAX_LIMIT = 1000
DEFAULT_CONCEPTS = 20
STATUSES = ("ready", "not_trained", "unavailable")


def _not_bool(value: Any) -> Any:
    # pydantic would read true as 1: a JSON boolean is no number
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return value


def _valid_unicode(value: str) -> str:
    # JSON's \ud800 escapes can smuggle in lone surrogates, which no UTF-8
    # encoder (nor tokeniser) takes
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"a lone surrogate at position {exc.start}") from None
    return value


Text = Annotated[str, AfterValidator(_valid_unicode)]
Word = Annotated[str, Field(pattern=r"^\S+$"), AfterValidator(_valid_unicode)]
# a BCP 47 tag's shape; which languages a vocabulary has is checked on use
LanguageTag = Annotated[str, Field(pattern=r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")]
LanguageCode = Annotated[str, Field(pattern=r"^[a-z]{2,3}$")]  # ISO 639
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT), BeforeValidator(_not_bool)]
Score = Annotated[
    float, Field(ge=0, le=1, allow_inf_nan=False), BeforeValidator(_not_bool)
]


class Request(BaseModel):
    """A request body or query: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")


class Response(BaseModel):
    """A response: every field is always sent."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


# -- requests -----------------------------------------------------------------


class Options(Request):
    """How to filter and show suggestions (default: the project's settings)."""

    limit: Limit = Field(None, description="Most subjects per document.")
    threshold: Score = Field(None, description="Lowest score returned.")
    language: LanguageTag = Field(None, description="Language of the labels.")
    explain: bool = Field(
        False, description="Add why each subject was suggested, where the backend can."
    )


METADATA = {"patternProperties": {"^metadata_": {"type": "string"}}}


class SuggestRequest(Options):
    """One document; Annif's `metadata_*` fields are accepted and ignored."""

    model_config = ConfigDict(json_schema_extra=METADATA)
    text: Text = Field(description="The document.")

    @model_validator(mode="before")
    @classmethod
    def _drop_metadata(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not k.startswith("metadata_")}
        return data


class BatchDocument(Request):
    text: Text
    document_id: Text | None = Field(None, description="Returned with its results.")
    metadata: dict[str, str] | None = Field(None, description="Accepted, unused.")


class BatchRequest(Options):
    documents: list[BatchDocument] = Field(
        description="At most the server's batch size (see the operation)."
    )


class SubjectRef(Request):
    uri: Text
    label: str | None = None


class LearnDocument(Request):
    """A document with the subjects a librarian gave it (one without a text
    is skipped, as Annif does)."""

    text: Text | None = None
    subjects: list[SubjectRef] = []
    metadata: dict[str, str] | None = None


class LearnRequest(RootModel[list[LearnDocument]]):
    """Documents to learn from (as Annif: a JSON array)."""


class DetectRequest(Request):
    text: Text
    languages: list[LanguageCode] = Field(
        min_length=1, description="Candidate languages (ISO 639-1: en, fi, sv)."
    )


class ConceptQuery(Request):
    """Exactly one of `uri` (a lookup) and `label` (a search)."""

    uri: Word = None
    label: Annotated[str, Field(pattern=r"\S"), AfterValidator(_valid_unicode)] = None
    language: LanguageTag = Field(None, description="Language of the labels.")
    limit: Limit = Field(DEFAULT_CONCEPTS, description="Most concepts a search gives.")


# -- responses ----------------------------------------------------------------


class ApiInfo(Response):
    title: str
    version: str


class Health(Response):
    status: Literal["ok"]
    version: str
    projects: int = Field(ge=0)
    models_loaded: int = Field(ge=0)


class ProjectReason(Response):
    project_id: str
    reason: str = Field(description="Why it is not loaded (no file paths).")


class ProjectStates(Response):
    """How many configured projects are in each state (all of them, also
    those the caller cannot see)."""

    loading: int = Field(ge=0)
    loaded: int = Field(ge=0)
    not_trained: int = Field(ge=0)
    unavailable: int = Field(ge=0)
    unloaded: int = Field(ge=0, description="With preloading off: not used yet.")


class ReadinessLists(BaseModel):
    loading: list[str] = Field(description="Projects whose models are loading.")
    failed: list[ProjectReason] = Field(description="Projects that failed to load.")
    not_trained: list[ProjectReason] = Field(
        description="Projects without a model: they answer 409 until trained, "
        "and do not make the server unready."
    )
    projects: ProjectStates


class Readiness(ReadinessLists, Response):
    status: Literal["ready"]


class Vocab(Response):
    vocab_id: str
    languages: list[str]
    size: int | None
    loaded: bool
    loaded_at: str | None


class VocabList(Response):
    vocabs: list[Vocab]


class BackendInfo(Response):
    backend_id: str


class Project(Response):
    project_id: str
    name: str
    language: str
    backend: BackendInfo
    vocab: Vocab | None
    vocab_language: str | None
    is_trained: bool | None
    modification_time: str | None
    kind: Literal["associative", "lexical", "ensemble"] | None
    access: Literal["public", "hidden", "private"]
    status: Literal[STATUSES] = Field(
        description="ready: can suggest now; unavailable: misconfigured on the "
        "server (the API key shows why in `error`)."
    )
    error: str | None
    limit: int = Field(ge=1)
    threshold: float = Field(ge=0, le=1)
    explain: bool = Field(description="Whether the backend explains suggestions.")
    allow_learn: bool = Field(description="Whether `learn` needs no API key.")


class ModelInfo(Response):
    trained_at: str
    documents: int | None = None
    subjects_seen: int | None = None
    vocab_size: int | None = None
    corpus_digest: str | None = None


class ProjectDetail(Project):
    params: dict[str, Any] | None
    model: ModelInfo | None
    evaluation_report: str | None = Field(
        None,
        description="Path of the project's last evaluation report (HTML), "
        "relative to the API root; null when it has none.",
    )


class ProjectList(Response):
    projects: list[Project]


class Suggestion(Response):
    uri: str
    label: str
    notation: str | None
    score: float = Field(ge=0, le=1)
    explanation: dict[str, Any] | None = Field(
        None,
        description="Only with explain=true; null when the backend has "
        "nothing to say about this subject.",
    )
    model_config = ConfigDict(json_schema_serialization_defaults_required=False)


class SuggestResponse(Response):
    results: list[Suggestion]
    project_id: str
    language: str = Field(description="Language of the labels.")


class BatchResult(Response):
    document_id: str | None
    results: list[Suggestion]


class BatchResponse(RootModel[list[BatchResult]]):
    """One result per document, in their order."""


class DetectedLanguage(Response):
    language: str | None = Field(description="null: no language could be told.")
    score: float = Field(ge=0, le=1)


class DetectResponse(Response):
    results: list[DetectedLanguage]


class Reload(Response):
    project_id: str
    status: Literal[STATUSES]
    modification_time: str | None


class ConceptRef(Response):
    uri: str
    label: str


class Concept(Response):
    uri: str
    label: str
    notation: str | None
    alt_labels: list[str]
    note: str | None
    deprecated: bool
    broader: list[ConceptRef]
    narrower: list[ConceptRef]
    related: list[ConceptRef]


class ConceptList(Response):
    vocab_id: str
    language: str
    concepts: list[Concept]


class Problem(BaseModel):
    """An error (RFC 9457): a 4xx status is the caller's to fix."""

    type: str
    title: str
    status: int = Field(ge=400, le=599)
    detail: str


class NotReady(ReadinessLists, Problem):
    """Not every project that can serve is loaded: the lists say which are
    still loading and which failed (only those the caller may see)."""
