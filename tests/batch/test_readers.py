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


def test_a_byte_order_mark_opening_a_file_is_not_part_of_its_first_record(tmp_path):
    bom = b"\xef\xbb\xbf"
    tsv = tmp_path / "short.tsv"
    tsv.write_bytes(bom + b"stars\t<http://x/a>\nmusic\n")
    assert [r.text for r in records(tsv, 1)] == ["stars", "music"]
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_bytes(bom + b'{"id": "a", "text": "stars"}\n{"id": "b", "text": "x"}\n')
    assert [(r.id, r.text, r.error) for r in records(jsonl, 1)] == [
        ("a", "stars", None),
        ("b", "x", None),
    ]
    # only at the start of the file: elsewhere it is the text's own
    jsonl.write_bytes(b'{"id": "a", "text": "stars"}\n' + bom + b'{"id": "b"}\n')
    assert records(jsonl, 1)[1].error.startswith("invalid JSON")


def _count_parquet_rows_decoded(monkeypatch) -> list[int]:
    """Rows pyarrow decodes from now on, whichever way it is asked to."""
    import pyarrow.parquet as pq

    decoded = [0]
    iter_batches, read_row_group = (
        pq.ParquetFile.iter_batches,
        pq.ParquetFile.read_row_group,
    )

    def counted_batches(self, *args, **kwargs):
        for batch in iter_batches(self, *args, **kwargs):
            decoded[0] += batch.num_rows
            yield batch

    def counted_group(self, *args, **kwargs):
        table = read_row_group(self, *args, **kwargs)
        decoded[0] += table.num_rows
        return table

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counted_batches)
    monkeypatch.setattr(pq.ParquetFile, "read_row_group", counted_group)
    return decoded


def test_parquet_blocks_read_in_order_decode_each_row_once(tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "in.parquet"
    rows = 5000
    table = pa.table({"id": [f"r{i}" for i in range(rows)],
                      "text": [f"text {i}" for i in range(rows)]})  # fmt: skip
    pq.write_table(table, path, row_group_size=2000)
    decoded = _count_parquet_rows_decoded(monkeypatch)
    found = records(path, block_size=100)
    assert [r.id for r in found] == [f"r{i}" for i in range(rows)]
    assert [r.text for r in found] == [f"text {i}" for i in range(rows)]
    assert decoded[0] == rows  # one row decoded per row read (18 before)


def test_parquet_blocks_read_in_any_order_are_the_right_rows(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": [f"t{i}" for i in range(50)]}), path,
                   row_group_size=20)  # fmt: skip
    specs = list(scan(path, 7, 0))
    for spec in [specs[3], specs[1], specs[2], specs[-1], specs[0], specs[5]]:
        texts = [r.text for r in read_block(spec, Options())]
        first = spec.first_row
        assert texts == [f"t{i}" for i in range(first, first + spec.count)]


def test_ids_follow_one_rule_in_every_format(tmp_path):
    """A string is the id, bytes are UTF-8, an integer is written in decimal,
    none is the record's place; anything else rejects the record."""
    path = tmp_path / "in.jsonl"
    path.write_text(
        '{"id": "a", "text": "stars"}\n'
        '{"id": 12, "text": "stars"}\n'
        '{"id": true, "text": "stars"}\n'
        '{"id": 1.5, "text": "stars"}\n'
        '{"id": ["x"], "text": "stars"}\n'
        '{"id": null, "text": "stars"}\n'
        '{"id": "\\ud800", "text": "stars"}\n'
    )
    found = [(r.id, r.error) for r in records(path)]
    assert found[:2] == [("a", None), ("12", None)]
    assert found[2] == ("in.jsonl:3", "the id is a boolean (True): give a string or "
                        "an integer")  # fmt: skip
    assert found[3][0] == "in.jsonl:4" and "a number with a fraction" in found[3][1]
    assert found[4][0] == "in.jsonl:5" and "of type list" in found[4][1]
    assert found[5] == ("in.jsonl:6", None)
    assert found[6][0] == "in.jsonl:7" and "lone surrogate" in found[6][1]


def test_binary_parquet_ids_are_utf8_text(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "in.parquet"
    ids = pa.array([b"doc-1", "d\u00f6c-2".encode(), b"\xffdoc"], type=pa.binary())
    pq.write_table(pa.table({"id": ids, "text": ["stars"] * 3}), path)
    found = [(r.id, r.error) for r in records(path, 5)]
    assert found[:2] == [("doc-1", None), ("d\u00f6c-2", None)]
    assert found[2][0] == "in.parquet:row 2"
    assert found[2][1].startswith("the id is not UTF-8 text")
    path = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"id": [7, 8], "text": ["stars"] * 2}), path)
    assert [r.id for r in records(path, 5)] == ["7", "8"]
    path = tmp_path / "bools.parquet"
    pq.write_table(pa.table({"id": [True], "text": ["stars"]}), path)
    assert "a boolean" in records(path, 5)[0].error


def test_a_file_name_that_is_not_utf8_is_a_rejected_record(tmp_path):
    import os

    from indexer.batch.plan import _identity

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("stars")
    (docs / os.fsdecode(b"\xff.txt")).write_text("music")
    found = [(r.id, r.where, r.error) for r in records(docs)]
    assert found[0] == ("a", "a.txt", None)
    assert found[1] == ("\\xff", "\\xff.txt", "the file name is not UTF-8: rename "
                        "the file")  # fmt: skip
    assert _identity(docs)[1] == "documents"  # the plan of such a directory too
