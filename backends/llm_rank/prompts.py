"""Prompt templates of the llm_rank backend, per language, and the builder that
turns a document and its candidates into token ids: one shared prefix (the
instruction, retrieved examples, the document and the yes/no question) and one
short suffix per candidate (its label and context).

The templates are configuration: projects.cfg can replace `prompt_template` and
`candidate_template`, and `template_file` (JSON) any key below, flat or per language.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from indexer.errors import ConfigError, InputError
from indexer.neural.prompt_text import as_text, cut_document

TEMPLATE_KEYS = (
    "instruction",
    "prompt_template",  # {instruction} {examples} {document}, and the question
    "example",  # {text} {subjects}
    "candidate",  # {label} {context} {alt} {broader} {note}
    "answer_cue",  # after the candidate in completion-style prompts
    "also",
    "broader",
    "yes",
    "no",
)
# The question sits in the shared prefix, so each candidate adds only its label.
TEMPLATES = {
    "en": {
        "instruction": "A librarian decides which subject headings of a controlled "
        "vocabulary describe a document.",
        "prompt_template": "{instruction}\n\n{examples}Document: {document}\n\n"
        "Is the following subject heading suitable for the document? "
        "Answer yes or no.\n",
        "example": "Similar document: {text}\nIts subject headings: {subjects}\n\n",
        "candidate": "Subject heading: {label}{context}",
        "answer_cue": "\nAnswer:",
        "also": "also",
        "broader": "broader",
        "yes": "yes",
        "no": "no",
    },
    "fi": {
        "instruction": "Kirjastonhoitaja päättää, mitkä asiasanaston asiasanat "
        "kuvaavat dokumenttia.",
        "prompt_template": "{instruction}\n\n{examples}Dokumentti: {document}\n\n"
        "Sopiiko seuraava asiasana dokumentille? Vastaa kyllä tai ei.\n",
        "example": "Samankaltainen dokumentti: {text}\nSen asiasanat: {subjects}\n\n",
        "candidate": "Asiasana: {label}{context}",
        "answer_cue": "\nVastaus:",
        "also": "myös",
        "broader": "laajempi",
        "yes": "kyllä",
        "no": "ei",
    },
    "de": {
        "instruction": "Eine Bibliothekarin entscheidet, welche Schlagwörter eines "
        "kontrollierten Vokabulars ein Dokument beschreiben.",
        "prompt_template": "{instruction}\n\n{examples}Dokument: {document}\n\n"
        "Passt das folgende Schlagwort zum Dokument? Antworte mit ja oder nein.\n",
        "example": "Ähnliches Dokument: {text}\nSeine Schlagwörter: {subjects}\n\n",
        "candidate": "Schlagwort: {label}{context}",
        "answer_cue": "\nAntwort:",
        "also": "auch",
        "broader": "Oberbegriff",
        "yes": "ja",
        "no": "nein",
    },
    "sv": {
        "instruction": "En bibliotekarie avgör vilka ämnesord i en kontrollerad "
        "vokabulär som beskriver ett dokument.",
        "prompt_template": "{instruction}\n\n{examples}Dokument: {document}\n\n"
        "Passar följande ämnesord för dokumentet? Svara ja eller nej.\n",
        "example": "Liknande dokument: {text}\nDess ämnesord: {subjects}\n\n",
        "candidate": "Ämnesord: {label}{context}",
        "answer_cue": "\nSvar:",
        "also": "även",
        "broader": "bredare",
        "yes": "ja",
        "no": "nej",
    },
}
SENTINEL = "\u2063CANDIDATE\u2063"  # marks where the candidate goes in a chat
STATE, QUESTION = "\u2063STATE\u2063", "\u2063QUESTION\u2063"  # decision templates


def resolve_templates(
    language: str, overrides: dict[str, str], template_file: Path | None, where: str
) -> dict[str, str]:
    """The language's defaults (English for other languages), then the keys of
    `template_file`, then the non-empty `overrides` from projects.cfg."""
    code = language.split("-")[0].lower()
    templates = dict(TEMPLATES.get(code, TEMPLATES["en"]))
    if template_file is not None:
        try:
            data = json.loads(template_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{where}: cannot read template_file: {exc}") from None
        if isinstance(data, dict) and isinstance(data.get(code), dict):
            data = data[code]
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: template_file must hold a JSON object")
        unknown = sorted(set(data) - set(TEMPLATE_KEYS) - set(TEMPLATES))
        if unknown:
            raise ConfigError(
                f"{where}: unknown template keys {', '.join(unknown)}; valid keys: "
                + ", ".join(TEMPLATE_KEYS)
            )
        templates.update({k: str(v) for k, v in data.items() if k in TEMPLATE_KEYS})
    for key, value in overrides.items():
        if value:
            templates[key] = value.replace("\\n", "\n")
    for key, fields in (
        ("prompt_template", {"instruction": "", "examples": "", "document": ""}),
        ("example", {"text": "", "subjects": ""}),
        (
            "candidate",
            dict.fromkeys(("label", "context", "alt", "broader", "note"), ""),
        ),
    ):
        try:
            templates[key].format(**fields)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"{where}: template '{key}' has a bad placeholder ({exc}); it may "
                "use " + ", ".join("{" + f + "}" for f in fields)
            ) from None
    return templates


@dataclass
class ConceptText:
    """What the prompt says about one candidate concept."""

    label: str
    alt: list[str]
    broader: list[str]
    note: str


def candidate_text(templates: dict[str, str], context, concept: ConceptText) -> str:
    """What the prompt says about one candidate: its label and the `context`
    (alt, broader, note) asked for."""
    t = templates
    parts = []
    if concept.alt and "alt" in context:
        parts.append(f"{t['also']}: {', '.join(concept.alt[:3])}")
    if concept.broader and "broader" in context:
        parts.append(f"{t['broader']}: {', '.join(concept.broader[:2])}")
    if concept.note and "note" in context:
        note = concept.note.strip()
        parts.append(note if len(note) <= 80 else note[:77].rstrip() + "...")
    joined = f" ({'; '.join(parts)})" if parts else ""
    return (
        t["candidate"]
        .format(
            label=concept.label,
            context=joined,
            alt=", ".join(concept.alt),
            broader=", ".join(concept.broader),
            note=concept.note,
        )
        .rstrip()
    )


def split_at_document(templates: dict[str, str]) -> tuple[str, str]:
    """The prompt template (without examples) before and after the document:
    the instruction, and the yes/no question."""
    body = templates["prompt_template"].format(
        instruction=templates["instruction"], examples="", document=SENTINEL
    )
    head, question = body.split(SENTINEL, 1)
    return head, question


@dataclass
class TokenizerOnly:
    """What `PromptBuilder.decision_template` needs of a model: its tokenizer."""

    tokenizer: object


@dataclass
class Prompt:
    """Token ids of one document's prompts: prefix + each suffix."""

    prefix: list[int]
    suffixes: list[list[int]]
    document_tokens: int
    truncated: bool


class PromptBuilder:
    """Renders the templates for one causal LM (chat or completion style)."""

    def __init__(
        self,
        lm,
        templates: dict[str, str],
        chat: bool,
        max_doc_tokens: int,
        context=("alt", "broader", "note"),
    ):
        self.lm = lm
        self.templates = templates
        self.chat = chat
        self.max_doc_tokens = max_doc_tokens
        self.context = set(context)
        if chat:
            rendered = self._render_chat("x")
            if rendered.count(SENTINEL) != 1:
                raise ConfigError(
                    "The model's chat template does not keep the message text: use "
                    "prompt_style = completion"
                )

    def _render_chat(self, prefix_text: str) -> str:
        messages = [{"role": "user", "content": prefix_text + SENTINEL}]
        return self.lm.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def candidate(self, concept: ConceptText) -> str:
        """The candidate's part of the prompt."""
        return candidate_text(self.templates, self.context, concept)

    def decision_template(self) -> str:
        """A jinja chat template for a System One server's decision config
        that renders, from the request's `state` (the document) and one `noul`
        question (`question_text`), the prompt this builder gives the model
        here without example documents: a served model then answers as the
        local one does."""
        head, question = split_at_document(self.templates)
        lead = question[: len(question) - len(question.lstrip())]
        text = head + STATE + lead + QUESTION
        if self.chat:
            rendered = self._render_chat(text).replace(SENTINEL, "")
        else:
            bos = self.lm.tokenizer.bos_token or ""
            rendered = bos + text + self.templates["answer_cue"]
        before, rest = rendered.split(STATE)
        between, after = rest.split(QUESTION)
        return (
            _jinja_literal(before)
            + "{{ state }}"
            + _jinja_literal(between)
            + "{{ question.instructions }}"
            + _jinja_literal(after)
        )

    def example(self, text: str, subjects: list[str], max_tokens: int) -> str:
        cut = cut_document(text, max_tokens, self.lm.tokenizer)
        return self.templates["example"].format(
            text=self._as_text(cut.text), subjects="; ".join(subjects)
        )

    def _as_text(self, text: str) -> str:
        return as_text(self.lm.tokenizer, text)

    def build(
        self, document: str, examples: list[str], concepts: list[ConceptText]
    ) -> Prompt:
        """Token ids; the document is cut (`cut_document`, as a server's is)
        to the token budget and to what the context window leaves after the
        longest candidate. Control tokens in the document, the examples and
        the candidates are read as text."""
        lm = self.lm
        if self.chat:
            tail = self._render_chat("").split(SENTINEL, 1)[1]
        else:
            tail = self.templates["answer_cue"]
        suffixes = [
            lm.encode_prompt(self._as_text(self.candidate(c)) + tail) for c in concepts
        ]
        longest = max((len(s) for s in suffixes), default=0)
        budget = self.max_doc_tokens
        while True:
            cut = cut_document(document, budget, lm.tokenizer)
            prefix = self._prefix(cut.text, examples)
            excess = len(prefix) + longest - lm.max_positions
            if excess <= 0:
                return Prompt(prefix, suffixes, cut.tokens, cut.truncated)
            if budget > 0:
                budget = max(0, min(budget, cut.tokens) - excess - 2)
            elif examples:
                examples = examples[:-1]
            else:
                raise InputError(
                    f"The prompt does not fit the model's {lm.max_positions}-token "
                    "context window even without the document: shorten the templates"
                )

    def _prefix(self, text: str, examples: list[str]) -> list[int]:
        body = self.templates["prompt_template"].format(
            instruction=self.templates["instruction"],
            examples="".join(examples),
            document=self._as_text(text),
        )
        if self.chat:
            head = self._render_chat(body).split(SENTINEL, 1)[0]
            return self.lm.encode_prompt(head)
        return self.lm.encode("", special=True) + self.lm.encode_prompt(body)


def question_text(templates: dict[str, str], candidate: str) -> str:
    """The instructions of one candidate's yes/no question to a decision
    server: the prompt's question, then what it says about the candidate."""
    return split_at_document(templates)[1].lstrip() + candidate


def _jinja_literal(text: str) -> str:
    """`text` as a jinja expression that prints it verbatim (JSON's escapes
    are those of jinja's string literals; no block tag, so the
    trim_blocks/lstrip_blocks of chat templates cannot touch it)."""
    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}" if text else ""
