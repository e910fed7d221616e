"""SKOS statements, as a parser reports them, into the fields of concept records.

A vocabulary of a million concepts is millions of triples. Instead of a graph
that indexes every triple three ways, the parser hands each statement of the
default graph to `ConceptRows.add`, which keeps only the statements a
ConceptRecord is made of, grouped by subject in one flat list each; `rows()`
makes the records' fields at the end, sorted by URI.

Where a field takes one value (a prefLabel per language, a note per language,
the notation), the first statement in the file wins.

A concept is named by an IRI: statements about a blank node are left out. A
blank node has another name at each parse, so such a concept could not keep
its id when the vocabulary is reloaded (each reload added it again).
"""

from __future__ import annotations

from collections.abc import Iterator

UNTAGGED = "und"
BLANK = "_:"  # how a parser names a blank node (an IRI cannot start so)
SKOS = "http://www.w3.org/2004/02/skos/core#"
RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"
OWL_DEPRECATED = "http://www.w3.org/2002/07/owl#deprecated"
DCT_IS_REPLACED_BY = "http://purl.org/dc/terms/isReplacedBy"

# what a statement is about, in a subject's list: (field, language, value)
(
    TYPE,
    PREF,
    ALT,
    SCOPE_NOTE,
    DEFINITION,
    NOTATION,
    DEPRECATED,
    BROADER,
    NARROWER,
    RELATED,
) = range(10)
FIELDS = {
    RDF_TYPE: TYPE,
    SKOS + "prefLabel": PREF,
    SKOS + "altLabel": ALT,
    SKOS + "hiddenLabel": ALT,
    SKOS + "scopeNote": SCOPE_NOTE,
    SKOS + "definition": DEFINITION,
    SKOS + "notation": NOTATION,
    OWL_DEPRECATED: DEPRECATED,
    DCT_IS_REPLACED_BY: DEPRECATED,
    SKOS + "broader": BROADER,
    SKOS + "narrower": NARROWER,
    SKOS + "related": RELATED,
}
CONCEPT, NOT_CONCEPT = "concept", "not a concept"
CLASSES = {
    SKOS + "Concept": CONCEPT,
    SKOS + "ConceptScheme": NOT_CONCEPT,
    SKOS + "Collection": NOT_CONCEPT,
    SKOS + "OrderedCollection": NOT_CONCEPT,
}
LABELS = frozenset({PREF, ALT, SCOPE_NOTE, DEFINITION})


class ConceptRows:
    """Collects the statements that make concept records (see the module)."""

    predicates = frozenset(FIELDS)

    def __init__(self):
        # subject -> [subject, field, language, value, field, ...]: the subject
        # first, so that the sets below and the relations share its string
        self.subjects: dict[str, list] = {}
        self.typed: dict[str, set[str]] = {CONCEPT: set(), NOT_CONCEPT: set()}
        self.narrower: list[tuple[str, str]] = []
        self._languages: dict[str, str] = {}

    def add(self, subject: str, predicate: str, value: str, lang, datatype) -> None:
        """One statement of the default graph: `subject` is an IRI or a blank
        node ("_:" and its name), `value` the object's IRI or blank node
        (`datatype` None) or a literal's lexical form (`datatype` its IRI,
        "" for a plain or language-tagged literal, `lang` its language)."""
        field = FIELDS.get(predicate)
        if field is None or subject.startswith(BLANK):
            return
        entry = self.subjects.get(subject)
        if entry is None:
            entry = self.subjects[subject] = [subject]
        if field in LABELS:
            lang = self._languages.setdefault(lang, lang) if lang else UNTAGGED
        elif field == TYPE:
            kind = CLASSES.get(value) if datatype is None else None
            if kind is not None:
                self.typed[kind].add(entry[0])
            return
        elif field == DEPRECATED:
            if predicate == OWL_DEPRECATED and not _true(value, lang, datatype):
                return
            value = True
        elif field == NARROWER:
            self.narrower.append((entry[0], self._shared(value)))
            return
        elif field in (BROADER, RELATED):
            value = self._shared(value)
        entry += (field, lang, value)

    def _shared(self, uri: str) -> str:
        """`uri`, as the string of the subject it names when there is one."""
        entry = self.subjects.get(uri)
        return uri if entry is None else entry[0]

    def rows(self) -> Iterator[list]:
        """The fields of each concept's ConceptRecord, in URI order."""
        concepts = self._concepts()
        parents: dict[str, list[str]] = {}
        for parent, child in self.narrower:  # skos:narrower, turned around
            if parent in concepts and child in concepts:
                parents.setdefault(child, []).append(parent)
        for uri in sorted(concepts):
            yield self._row(uri, concepts, parents.get(uri, ()))

    def _concepts(self) -> set[str]:
        if self.typed[CONCEPT]:
            return self.typed[CONCEPT]
        # some vocabularies do not type their concepts
        labelled = {s for s, entry in self.subjects.items() if PREF in entry[1::3]}
        return labelled - self.typed[NOT_CONCEPT]

    def _row(self, uri: str, concepts: set[str], parents) -> list:
        notation, deprecated = "", False
        pref: dict[str, str] = {}
        alt: dict[str, set[str]] = {}
        scope: dict[str, str] = {}
        definition: dict[str, str] = {}
        broader, related = set(parents), set()
        statements = iter(self.subjects[uri])
        next(statements)  # the subject
        triples = zip(statements, statements, statements, strict=True)
        for field, lang, value in triples:
            if field == PREF:
                pref.setdefault(lang, value)
            elif field == ALT:
                alt.setdefault(lang, set()).add(value)
            elif field == SCOPE_NOTE:
                scope.setdefault(lang, value)
            elif field == DEFINITION:
                definition.setdefault(lang, value)
            elif field == NOTATION:
                notation = notation or value
            elif field == DEPRECATED:
                deprecated = True
            elif field == BROADER and value in concepts:
                broader.add(value)
            elif field == RELATED and value in concepts:
                related.add(value)
        note = scope  # a scopeNote before a definition in the same language
        for lang, value in definition.items():
            note.setdefault(lang, value)
        alt_sorted = {lang: sorted(values) for lang, values in alt.items()}
        return [
            uri,
            notation,
            deprecated,
            pref,
            alt_sorted,
            note,
            sorted(broader),
            sorted(related),
        ]


def _true(value: str, lang, datatype) -> bool:
    """Whether an owl:deprecated object says true, as rdflib reads it (so
    "1"^^xsd:integer does, and an IRI does not)."""
    if datatype is None:
        return False
    from rdflib import Literal, URIRef

    literal = Literal(value, lang=lang or None, datatype=URIRef(datatype) or None)
    return literal.toPython() in (True, "true", "1")
