"""Reference pages generated from the code at build time (an MkDocs hook).

A page asks for a generated part with an HTML comment on a line of its own:

    <!-- generated: cli -->                 every command of the click group
    <!-- generated: backends -->            the backends: kind, extra, summary
    <!-- generated: params NAME -->         one backend's Params dataclass
    <!-- generated: rest -->                every operation of the OpenAPI document
    <!-- generated: include PATH -->        a file of the repository (benchmarks)

So the CLI reference is the click group, the parameter tables are the typed
parameter declarations (indexer.params) and the REST reference is the OpenAPI
document the server itself serves: one source each, nothing to keep in step.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import posixpath
import re
import typing
from pathlib import Path

MARKER = re.compile(
    r"^<!-- generated: (?P<what>[\w-]+)(?: (?P<arg>[\w./-]+))? -->$", re.M
)
ROOT = Path(__file__).resolve().parent.parent


def expand(markdown: str, page: str = "index.md") -> str:
    """`markdown` with every generated-part marker replaced by its content;
    `page` (the page's path under docs/) makes the generated links relative."""
    return MARKER.sub(lambda m: GENERATORS[m["what"]](m["arg"], page), markdown)


def _link(target: str, page: str) -> str:
    """`target` (a path under docs/) as a link from `page`."""
    return posixpath.relpath(target, posixpath.dirname(page) or ".")


def cli_reference(_arg: str | None = None, _page: str = "") -> str:
    """Every command of `indexer`, with its usage, help and options."""
    import click

    from indexer.cli import cli

    root = click.Context(cli, info_name="indexer")
    commands = [
        (name, command)
        for name in cli.list_commands(root)
        if (command := cli.get_command(root, name)) and not command.hidden
    ]
    summary = ["| command | what it does |", "|---|---|"]
    for name, command in commands:
        anchor = f"indexer-{name}"
        short = _cell(command.get_short_help_str(limit=200))
        summary.append(f"| [`{name}`](#{anchor}) | {short} |")
    out = ["\n".join(summary) + "\n", _command_doc(cli, root, "indexer", level=2)]
    for name, command in commands:
        ctx = click.Context(command, info_name=name, parent=root)
        out.append(_command_doc(command, ctx, f"indexer {name}", level=2))
    return "\n".join(out)


def _command_doc(command, ctx, title: str, level: int) -> str:
    usage = " ".join([title, *command.collect_usage_pieces(ctx)])
    help_text = inspect.cleandoc(command.help or "").replace("\b\n", "")
    lines = [f"{'#' * level} `{title}`", "", f"```text\n{usage}\n```", ""]
    lines += [_md_escape(help_text), ""]
    rows = []
    for param in command.get_params(ctx):
        if param.param_type_name == "argument":
            continue
        record = param.get_help_record(ctx)
        if record is None or "--help" in param.opts:
            continue
        opts, help_ = record
        rows.append(f"| `{opts}` | {_cell(help_)} |")
    if rows:
        lines += ["| option | meaning |", "|---|---|", *rows, ""]
    return "\n".join(lines)


def backends_table(_arg: str | None = None, page: str = "index.md") -> str:
    """One row per backend: kind, the extra it needs, what it does."""
    from indexer.registry import BACKEND_EXTRAS, backend_names, get_backend_class

    rows = ["| backend | kind | extra | what it does |", "|---|---|---|---|"]
    for name in backend_names():
        cls = get_backend_class(name)
        summary = " ".join(inspect.getdoc(cls).split("\n\n")[0].split())
        extra = BACKEND_EXTRAS.get(name, "core")
        link = f"[`{name}`]({_link('reference/parameters.md', page)}#{name})"
        rows.append(f"| {link} | {cls.kind} | {extra} | {_cell(summary)} |")
    return "\n".join(rows) + "\n"


def params_reference(name: str | None, _page: str = "") -> str:
    """The parameter table of backend `name`, or of every backend when None."""
    from indexer.registry import backend_names, get_backend_class

    if name is None:
        return "\n".join(
            _backend_params(n, get_backend_class(n)) for n in backend_names()
        )
    return _params_table(get_backend_class(name).Params)


def _backend_params(name: str, cls: type) -> str:
    from indexer.registry import BACKEND_EXTRAS

    summary = " ".join(inspect.getdoc(cls).split("\n\n")[0].split())
    extra = BACKEND_EXTRAS.get(name)
    needs = f" Needs the `{extra}` extra." if extra else ""
    return (
        f"## {name}\n\nKind: **{cls.kind}**.{needs} {_md_escape(summary)}\n\n"
        f"{_params_table(cls.Params)}\n"
    )


def _params_table(params_cls: type) -> str:
    from indexer.params import describe

    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    if not fields:
        return "No parameters.\n"
    rows = ["| parameter | type | default | meaning |", "|---|---|---|---|"]
    for item in describe(params_cls):
        meta = fields[item["name"]].metadata
        limits = []
        if item["choices"]:
            limits.append("one of " + ", ".join(f"`{c}`" for c in item["choices"]))
        if meta.get("min") is not None:
            limits.append(f"at least {meta['min']}")
        if meta.get("max") is not None:
            limits.append(f"at most {meta['max']}")
        meaning = "; ".join(filter(None, [item["help"], ", ".join(limits)]))
        rows.append(
            f"| `{item['name']}` | {item['type']} | {_default(item['default'])} "
            f"| {_cell(meaning)} |"
        )
    return "\n".join(rows) + "\n"


def _default(value: typing.Any) -> str:
    if value is None or value == "" or value == []:
        return "(none)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        value = ", ".join(map(str, value))
    return f"`{_cell(str(value))}`"


def openapi() -> dict:
    """The OpenAPI document that `indexer serve` answers at /v1/openapi.json."""
    from indexer.rest import create_app

    app = create_app(ROOT / "projects.cfg", check_interval=None, metrics="off")
    return app.config["INDEXER_OPENAPI"]


def rest_reference(_arg: str | None = None, _page: str = "") -> str:
    """Every operation of the OpenAPI document: parameters, body, answers."""
    document = openapi()
    schemas = document["components"]["schemas"]
    out = []
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            out += [f"### `{method.upper()} {path}`", "", _md_escape(op["summary"]), ""]
            if op.get("description"):
                out += [_md_escape(op["description"]), ""]
            security = op.get("security", [])
            if security == [{"apiKey": []}]:
                out += ["Needs the API key (`X-API-Key`).", ""]
            params = op.get("parameters", [])
            if params:
                out += ["| parameter | in | type | meaning |", "|---|---|---|---|"]
                for p in params:
                    out.append(
                        f"| `{p['name']}` | {p['in']} | {_schema_type(p['schema'])} "
                        f"| {_cell(p['schema'].get('description', ''))} |"
                    )
                out.append("")
            body = op.get("requestBody")
            if body:
                media = ", ".join(f"`{m}`" for m in body["content"])
                out += [f"Request body ({media}):", ""]
                ref = next(
                    (c["schema"].get("$ref") for c in body["content"].values()), None
                )
                if ref:
                    out += [_schema_table(schemas, ref.rsplit("/", 1)[1]), ""]
            out += ["| status | answer |", "|---|---|"]
            answers = []
            for status, answer in op["responses"].items():
                if "$ref" in answer:
                    name = answer["$ref"].rsplit("/", 1)[1]
                    answer = document["components"]["responses"][name]
                out.append(f"| {status} | {_cell(answer.get('description', ''))} |")
                for content in answer.get("content", {}).values():
                    ref = content["schema"].get("$ref")
                    if status.startswith("2") and ref:
                        answers.append(ref.rsplit("/", 1)[1])
            out.append("")
            for name in answers:
                out += [f"Answer (`{name}`):", "", _schema_table(schemas, name), ""]
    return "\n".join(out)


def _schema_table(schemas: dict, name: str) -> str:
    schema = schemas[name]
    required = set(schema.get("required", []))
    rows = ["| field | type | meaning |", "|---|---|---|"]
    for field, prop in schema.get("properties", {}).items():
        mark = " (required)" if field in required else ""
        rows.append(
            f"| `{field}`{mark} | {_schema_type(prop)} "
            f"| {_cell(prop.get('description', ''))} |"
        )
    return "\n".join(rows)


def _schema_type(schema: dict) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[1]
    if "anyOf" in schema:
        return " or ".join(_schema_type(s) for s in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_schema_type(schema.get('items', {}))}"
    bounds = [
        f"{word} {schema[key]}"
        for key, word in (
            ("minimum", "from"),
            ("maximum", "to"),
            ("minLength", "min length"),
            ("maxLength", "max length"),
        )
        if key in schema
    ]
    return f"{kind} ({', '.join(bounds)})" if bounds else str(kind)


def _cell(text: str) -> str:
    """Text that stays inside one Markdown table cell."""
    return _md_escape(" ".join(str(text).split())).replace("|", "\\|")


def _md_escape(text: str) -> str:
    # outside code spans, "<" would start HTML (<uri> in help texts) and a
    # lone "*" would open emphasis
    parts = re.split(r"(`[^`]*`)", text)
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace("*", "\\*")
    return "".join(parts)


def openapi_json() -> str:
    """The OpenAPI document as the site publishes it (reference/openapi.json)."""
    return json.dumps(openapi(), indent=2, ensure_ascii=False) + "\n"


def include(path: str | None, _page: str = "") -> str:
    """A Markdown file of the repository, as it is (benchmarks/README.md)."""
    return (ROOT / str(path)).read_text(encoding="utf-8")


GENERATORS = {
    "include": include,
    "cli": cli_reference,
    "backends": backends_table,
    "params": params_reference,
    "rest": rest_reference,
}


# -- MkDocs hooks ------------------------------------------------------------


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replace the generated-part markers of a page before it is rendered."""
    return expand(markdown, page.file.src_uri)


def on_files(files, config):
    """Publish the OpenAPI document beside the REST reference."""
    from mkdocs.structure.files import File

    files.append(
        File.generated(config, "reference/openapi.json", content=openapi_json())
    )
    return files
