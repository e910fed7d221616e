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
MAX_DEPTH = 8  # deeper JSON is no list of headings (and must not recurse)
FENCE = re.compile(r"```[a-zA-Z]*\s*(.*?)(?:```|$)", re.DOTALL)
STRING = r'"(?:[^"\\]|\\.)*"'
# a list of strings cut off after its last complete string
CUT_OFF_LIST = re.compile(rf"\[\s*({STRING}(?:\s*,\s*{STRING})*)")
OBJECT_START = re.compile(r'\{\s*"')
LIST_MARKER = re.compile(r"^\s*(?:[-*•]+|\d+[.)]|\(\d+\)|\[\d+\])\s+")
BRACKET_NUMBERS = re.compile(r"(?m)^\s*\[\d+\]\s+\S")  # "[1] Solar energy"
SEPARATORS = re.compile(r"[\n,;]")
EMPHASIS = re.compile(r"\*\*|__")
SIGNIFICANT = re.compile(r'\\.|[][{}"]', re.DOTALL)  # what bracket matching reads
QUOTED_HEAD = re.compile(r'\s*"([^"]+)"')
#: keys whose string names the heading in a list of objects
LABEL_KEYS = ("label", "term", "heading", "subject", "name", "keyword", "topic")


def parse_terms(answer: str, limit: int) -> list[str]:
    """At most `limit` distinct subject terms from `answer`, in its order."""
    found = json_strings(answer)
    if found is None:
        found = free_text_terms(answer)
    return clean_terms(found, limit)


def free_text_terms(answer: str) -> list[str]:
    """The items of a bulleted or numbered list in `answer` (its lead-in and
    closing sentences are no headings), else its lines, commas and
    semicolons, after a lead-in line ("Sure, here are the terms:")."""
    lines = answer.splitlines()
    items = [line for line in lines if LIST_MARKER.match(line)]
    if items:
        return [line_term(item) for item in items]
    content = [line for line in lines if line.strip()]
    if len(content) > 1 and content[0].rstrip().endswith(":"):
        answer = "\n".join(content[1:])  # the lead-in is no heading
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
    """The terms of the last JSON list in `answer` that holds any (inside
    code fences first; the model's own list comes after one it quotes), its
    nested lists and `{"label": ...}` objects included; the complete
    strings of a list cut off before its end; none from a JSON object
    without a list (its keys and values are no headings) or from lists
    without strings; None when `answer` has no JSON at all, or its only
    lists number the lines of a list ("[1] Solar energy")."""
    lists = False
    for text in [*FENCE.findall(answer), answer]:
        found, any_list = _last_terms(text)
        if found:
            return found
        lists = lists or any_list
    if lists and not BRACKET_NUMBERS.search(answer):
        return []
    return [] if OBJECT_START.search(answer) else None


def _last_terms(text: str) -> tuple[list[str], bool]:
    """(the terms of the last JSON value in `text` that has any, whether
    `text` has a JSON list at all)."""
    lists = False
    for value in reversed(_values(text)):
        lists = lists or isinstance(value, list)
        found = _terms_of(value)
        if found:
            return found, True
    return [], lists


def _values(text: str) -> list:
    """The outermost JSON lists and objects in `text`, in order: a bracketed
    span that is no JSON (or nests deeper than MAX_DEPTH) gives the values
    inside it; a list cut off at the end gives its complete strings. One
    pass over `text` matches the brackets (strings inside them skipped), so
    that no answer costs more than linear time or deep recursion."""
    pairs, unclosed = _bracket_pairs(text)
    children: dict[int | None, list[tuple[int, int, int]]] = {}
    for start, end, parent, deepest in pairs:
        if parent is not None and parent in unclosed:
            parent = None  # inside a bracket that never closes: outermost
        children.setdefault(parent, []).append((start, end, deepest))
    found: list[tuple[int, object]] = []
    todo = list(children.get(None, []))
    while todo:
        start, end, deepest = todo.pop()
        if deepest <= MAX_DEPTH:
            try:
                found.append((start, json.loads(text[start:end])))
                continue
            except (ValueError, RecursionError):
                pass
        todo += children.get(start, [])
    for start in sorted(unclosed):  # the outermost list that was cut off
        cut_off = CUT_OFF_LIST.match(text, start)
        if cut_off is not None:
            strings = [_unquoted(q) for q in re.findall(STRING, cut_off.group(1))]
            found.append((start, [q for q in strings if q is not None]))
            break
    return [value for _, value in sorted(found, key=lambda item: item[0])]


def _bracket_pairs(text: str) -> tuple[list[tuple], set[int]]:
    """([(start, end, the start of the enclosing bracket or None, nesting
    depth inside)], the starts of the brackets that never close)."""
    pairs = []
    stack: list[list[int]] = []  # [start, deepest nesting below it]
    in_string = False
    for match in SIGNIFICANT.finditer(text):
        char, i = match.group(), match.start()
        if in_string:
            in_string = char != '"'  # an escape pair (backslash + char) is one match
        elif char == '"':
            in_string = bool(stack)  # quotes in prose around a list are no JSON
        elif char in "[{":
            stack.append([i, 1])
        elif char in "]}" and stack:
            start, deepest = stack.pop()
            parent = stack[-1][0] if stack else None
            if stack:
                stack[-1][1] = max(stack[-1][1], deepest + 1)
            pairs.append((start, i + 1, parent, deepest))
    return pairs, {start for start, _ in stack}


def _unquoted(quoted: str) -> str | None:
    try:
        return json.loads(quoted)
    except ValueError:
        return None


def _terms_of(value) -> list[str]:
    """The strings of a list, of its nested lists and the labels of its
    objects; of an object, those of its first list."""
    if isinstance(value, dict):
        inner = next((v for v in value.values() if isinstance(v, list)), None)
        return _terms_of(inner) if inner is not None else _label(value)
    if not isinstance(value, list):
        return []
    out: list[str] = []
    for item in value:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, list):
            out += [v for v in item if isinstance(v, str)]
        elif isinstance(item, dict):
            out += _label(item)
    return out


def _label(value: dict) -> list[str]:
    for key in LABEL_KEYS:
        if isinstance(value.get(key), str):
            return [value[key]]
    return []


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
