"""The OpenAPI document against the live server: schemathesis generates
requests from /v1/openapi.json (valid ones and, for negative checks, invalid
ones) and checks that no answer is a server error, and that every status,
content type and body is one the document promises."""

from __future__ import annotations

import zlib

import pytest

from tests.conftest import DATA
from tests.test_rest import running_server

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

# real ids, so that requests reach the suggestion code, not only the 404
PROJECT_IDS = ("lexical-en", "tfidf-en", "dummy-en", "ensemble-en", "nope")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from indexer.project import Projects
    from indexer.rest import create_app
    from tests.conftest import PROJECTS_CFG

    root = tmp_path_factory.mktemp("fuzz")
    config = root / "projects.cfg"
    config.write_text(PROJECTS_CFG.format(data=DATA))
    Projects.from_path(config).get("tfidf-en").train([DATA / "tiny.tsv"])
    app = create_app(config, api_key="fuzz-key", check_interval=None)
    with running_server(app) as base:
        yield base


@pytest.fixture(scope="module")
def api_schema(live):
    return schemathesis.openapi.from_url(f"{live}/v1/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_server_keeps_the_promises_of_its_document(case, live):
    if "project_id" in case.path_parameters:
        seed = zlib.crc32(repr(case.body).encode() + repr(case.query).encode())
        case.path_parameters["project_id"] = PROJECT_IDS[seed % len(PROJECT_IDS)]
    if "vocab_id" in case.path_parameters:
        case.path_parameters["vocab_id"] = "tiny"
    _languages_the_vocabulary_has(case)
    case.call_and_validate(base_url=live, checks=CHECKS)


def _languages_the_vocabulary_has(case) -> None:
    """Valid requests name languages that exist (the document gives only their
    shape), so that they reach the suggestion code rather than a 400."""
    if case.meta is None or case.meta.generation.mode.name != "POSITIVE":
        return
    if isinstance(case.query, dict) and "uri" in case.query:
        case.query.pop("label", None)  # one of the two, as the operation says
    elif isinstance(case.query, dict) and case.path.endswith("/concepts"):
        case.query.setdefault("label", "science")
    for fields in (case.query, case.body):
        if isinstance(fields, dict):
            if "language" in fields:
                fields["language"] = "fi" if len(fields["language"]) % 2 else "en"
            if "languages" in fields:
                fields["languages"] = ["en", "fi", "sv"][: len(fields["languages"])]
