"""The subject terms in a model's answer: a JSON list of strings, wherever it
stands (inside code fences, after a sentence, as a value of an object, cut
off by the token limit), else, when the answer holds no JSON at all, the
items of a bulleted or numbered list, or one term per line, comma or
semicolon. What comes out is
validated: strings only, stripped, without list markers, no duplicates
(ignoring case), at most `limit`."""

from __future__ import annotations

import json
import re

MAX_TERM_CHARS = 120  # longer "terms" are sentences, not subject headings
FENCE = re.compile(r"```[a-zA-Z]*\s*(.*?)(?:```|$)", re.DOTALL)
STRING = r'"(?:[^"\\]|\\.)*"'
# the start of a list of strings, cut off after its last complete string
CUT_OFF_LIST = re.compile(rf"\[\s*({STRING}(?:\s*,\s*{STRING})*)")
OBJECT_START = re.compile(r'\{\s*"')
LIST_MARKER = re.compile(r"^\s*(?:[-*•]+|\d+[.)]|\(\d+\))\s+")
SEPARATORS = re.compile(r"[\n,;]")
EMPHASIS = re.compile(r"\*\*|__")
QUOTED_HEAD = re.compile(r'\s*"([^"]+)"')


def parse_terms(answer: str, limit: int) -> list[str]:
    """At most `limit` distinct subject terms from `answer`, in its order."""
    found = json_strings(answer)
    if found is None:
        found = free_text_terms(answer)
    return clean_terms(found, limit)


def free_text_terms(answer: str) -> list[str]:
    """The items of a bulleted or numbered list in `answer` (its lead-in and
    closing sentences are no headings), else its lines, commas and
    semicolons."""
    items = [line for line in answer.splitlines() if LIST_MARKER.match(line)]
    if items:
        return [line_term(item) for item in items]
    return [line_term(part) for part in SEPARATORS.split(answer)]


def line_term(line: str) -> str:
    """The heading of a line of free text: without list marker and markdown
    emphasis; the quoted words it starts with, or what comes before a colon
    ("Solar power: the use of ...")."""
    line = EMPHASIS.sub("", LIST_MARKER.sub("", line))
    quoted = QUOTED_HEAD.match(line)
    if quoted:
        return quoted.group(1)
    head, colon, rest = line.partition(": ")
    return head if colon and head.strip() and rest.strip() else line


def json_strings(answer: str) -> list[str] | None:
    """The strings of the first JSON list in `answer` that holds any (inside
    code fences first); the complete strings of a list cut off before its
    end; none from a JSON object without a list (its keys and values are no
    headings); None when `answer` has no JSON at all."""
    for text in [*FENCE.findall(answer), answer]:
        found = _first_list(text)
        if found is not None:
            return found
    cut_off = CUT_OFF_LIST.search(answer)
    if cut_off is None:
        return [] if OBJECT_START.search(answer) else None
    strings = [_unquoted(s) for s in re.findall(STRING, cut_off.group(1))]
    return [s for s in strings if s is not None]


def _first_list(text: str) -> list[str] | None:
    decoder = json.JSONDecoder()
    lists = 0
    for match in re.finditer(r"\[", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        lists += 1
        strings = [v for v in value if isinstance(v, str)]
        if strings:
            return strings
    return [] if lists else None


def _unquoted(quoted: str) -> str | None:
    try:
        return json.loads(quoted)
    except ValueError:
        return None


def clean_terms(candidates: list, limit: int) -> list[str]:
    """Strings only, stripped of white space, quotes and brackets;
    neither empty nor overlong; the first of each (case-insensitive)
    duplicate; at most `limit`."""
    out: dict[str, str] = {}
    for candidate in candidates:
        if not isinstance(candidate, str):
            continue
        term = " ".join(candidate.split()).strip(" \"'`.:[]")
        if term and len(term) <= MAX_TERM_CHARS:
            out.setdefault(term.casefold(), term)
        if len(out) == limit:
            break
    return list(out.values())
