"""The chat messages that ask a model for a document's subject terms, per
language: a system message (who answers) and a user message with the
document and the request for a JSON list of at most {terms} headings.
projects.cfg can replace either (`system_prompt`, `user_prompt`)."""

from __future__ import annotations

from indexer.errors import ConfigError

# The document comes first and the request last, as a question about its
# topics: SmolLM2-135M then lists headings (numbered lines, if not JSON),
# where a bare request for a JSON list made it write a JSON object.
TEMPLATES = {
    "en": {
        "system": "You are a librarian who assigns subject headings from a "
        "controlled vocabulary to documents.",
        "user": "Document: {document}\n\nWhat are the main topics of this "
        "document? List up to {terms} subject headings (keywords) that a "
        "librarian would assign to it, as a JSON list of strings, like "
        '["topic", "another topic"].',
    },
    "fi": {
        "system": "Olet kirjastonhoitaja, joka antaa dokumenteille asiasanoja "
        "asiasanastosta.",
        "user": "Dokumentti: {document}\n\nMitkä ovat tämän dokumentin "
        "pääaiheet? Luettele enintään {terms} asiasanaa, jotka kirjastonhoitaja "
        'antaisi sille, JSON-listana merkkijonoja, kuten ["aihe", "toinen aihe"].',
    },
    "de": {
        "system": "Du bist eine Bibliothekarin, die Dokumenten Schlagwörter aus "
        "einem kontrollierten Vokabular zuweist.",
        "user": "Dokument: {document}\n\nWas sind die Hauptthemen dieses "
        "Dokuments? Nenne bis zu {terms} Schlagwörter, die eine Bibliothekarin "
        "ihm zuweisen würde, als JSON-Liste von Zeichenketten, etwa "
        '["Thema", "anderes Thema"].',
    },
    "sv": {
        "system": "Du är en bibliotekarie som tilldelar dokument ämnesord ur en "
        "kontrollerad vokabulär.",
        "user": "Dokument: {document}\n\nVilka är dokumentets huvudämnen? Ange "
        "högst {terms} ämnesord som en bibliotekarie skulle tilldela det, som en "
        'JSON-lista med strängar, till exempel ["ämne", "ett annat ämne"].',
    },
}


class TermsPrompt:
    """The messages for one document (its text already cut to size)."""

    def __init__(self, language: str, terms: int, system: str = "", user: str = ""):
        code = language.split("-")[0].lower()
        defaults = TEMPLATES.get(code, TEMPLATES["en"])
        self.system = (system or defaults["system"]).replace("\\n", "\n")
        self.user = (user or defaults["user"]).replace("\\n", "\n")
        self.terms = terms
        self._check()

    def _check(self) -> None:
        if "{document}" not in self.user:
            raise ConfigError("user_prompt has no {document}")
        for name, template in (
            ("system_prompt", self.system),
            ("user_prompt", self.user),
        ):
            try:
                template.format(document="", terms=0)
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(
                    f"{name} has a bad placeholder ({exc}); it may use {{document}} "
                    "and {terms}"
                ) from None

    def messages(self, document: str) -> list[dict]:
        """The system and user messages asking about `document`."""
        fields = {"document": document, "terms": self.terms}
        out = [{"role": "user", "content": self.user.format(**fields)}]
        if self.system.strip():
            out.insert(0, {"role": "system", "content": self.system.format(**fields)})
        return out
