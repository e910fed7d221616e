"""Batch inputs: every format cut into blocks, bad records kept with their reason."""

from __future__ import annotations

import pytest

from indexer.batch.readers import read_block, scan
from indexer.batch.records import Options
from indexer.errors import UsageError


def records(path, block_size=2, options=None):
    specs = list(scan(path, block_size, 0))
    assert [s.number for s in specs] == list(range(len(specs)))
    options = options or Options()
    out = [r for spec in specs for r in read_block(spec, options)]
    assert len(out) == sum(s.count for s in specs)
    return out


def test_jsonl_blocks_skip_blank_lines_and_keep_bad_records(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        b'{"id": "a", "text": "stars"}\n\n'
        b'{"id": "b"}\n'
        b'{"id": "c", "text": "caf\xe9"}\n'
        b"not json\n"
        b'{"id": 7, "text": "  "}\n'
        b'{"text": "music"}\n'
    )
    found = [(r.id, r.text, r.error) for r in records(path)]
    assert found == [
        ("a", "stars", None),
        ("b", None, "no text"),
        ("c", None, "not UTF-8 text (the invalid UTF-8 byte 0xe9 at byte offset 24)"),
        ("in.jsonl:5", None, "invalid JSON (Expecting value)"),
        ("7", None, "empty text"),
        ("in.jsonl:7", "music", None),
    ]


def test_annif_tsv_and_directory(tmp_path):
    tsv = tmp_path / "short.tsv"
    tsv.write_text("stars\t<http://x/a>\nmusic history\n")
    assert [(r.id, r.text) for r in records(tsv, 1)] == [
        ("short.tsv:1", "stars"),
        ("short.tsv:2", "music history"),
    ]
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("stars")
    (docs / "b.txt").write_bytes(b"\x00\x01\x02binary")
    (docs / "c.txt").write_bytes(b"\xff\xfe latin")
    found = {r.id: r.error for r in records(docs)}
    assert found["a"] is None
    assert "looks binary" in found["b"] and "b.txt" in found["b"]
    assert "not UTF-8" in found["c"] and "c.txt" in found["c"]


def test_parquet_with_configured_columns(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "in.parquet"
    table = pa.table({"key": ["x", "y", "z"], "body": ["stars", None, "music"]})
    pq.write_table(table, path, row_group_size=2)
    options = Options(id_column="key", text_column="body")
    specs = list(scan(path, 5, 0))
    assert [s.count for s in specs] == [2, 1]  # blocks never span row groups
    found = [(r.id, r.text, r.error) for s in specs for r in read_block(s, options)]
    assert found == [("x", "stars", None), ("y", None, "no text"), ("z", "music", None)]


def test_unknown_format_is_a_usage_error(tmp_path):
    path = tmp_path / "in.xml"
    path.write_text("<x/>")
    with pytest.raises(UsageError, match="Cannot tell the format of 'in.xml'"):
        list(scan(path, 10, 0))
