"""The server's log: text lines as ever, or one JSON object a line
(`indexer serve --log-format json`) with a line per request; and the request
id that every line logged while a request runs carries."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
import threading
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: the id of the request this thread is answering (None outside requests)
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
MAX_REQUEST_ID = 128
# visible ASCII only: an id is echoed in a header and pasted into log searches
_SANE_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_REQUEST_ID}}}")
#: the logger of the request lines
requests_log = logging.getLogger("indexer.rest.requests")


def request_id(supplied: str | None) -> str:
    """The caller's X-Request-ID when it is sane (1 to 128 visible ASCII
    characters), else a new random one."""
    if supplied and _SANE_ID.fullmatch(supplied):
        return supplied
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Stamps each record with the id of the request being answered."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, pid, the request
    id (within a request), a request line's fields, and any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process or os.getpid(),
        }
        if getattr(record, "request_id", None):
            entry["request_id"] = record.request_id
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def escape_controls(text: str) -> str:
    """`text` with its control characters and line breaks written as escapes
    (a newline as \\n): a logged value, say a URI a caller sent, cannot start
    a line of its own that reads as the server's."""
    return _CONTROLS.sub(_escape, text)


_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(found: re.Match) -> str:
    char = found.group()
    if char in _ESCAPES:
        return _ESCAPES[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


class TextFormatter(logging.Formatter):
    """Text lines whose message cannot break the line: control characters are
    escaped (a traceback below the line stays as it is)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        message = record.message
        record.message = escape_controls(message)
        try:
            return super().formatMessage(record)
        finally:
            record.message = message


class StderrToLog(io.TextIOBase):
    """Stands in for sys.stderr where every line must be JSON: each line that
    something prints (a vocabulary being loaded, a warning) becomes a log
    record of the logger `indexer.stderr`. The log handler keeps the real
    stream; anything the logging itself prints goes there too."""

    def __init__(self, stream, level: int = logging.INFO):
        super().__init__()
        self.stream, self.level = stream, level
        self._buffer = ""
        self._inside = threading.local()
        self._lock = threading.RLock()
        self.log = logging.getLogger("indexer.stderr")
        # a worker forked while another thread held the lock would hang on it
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.RLock()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False  # no progress bars redrawn in place

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self):
        return getattr(self.stream, "encoding", "utf-8")

    def write(self, text: str) -> int:
        if getattr(self._inside, "yes", False):  # the logging's own complaint
            return self.stream.write(text)
        with self._lock:
            self._buffer += text
            *lines, self._buffer = self._buffer.split("\n")
        self._emit(lines)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def _emit(self, lines: list[str]) -> None:
        self._inside.yes = True
        try:
            for line in lines:
                if line.strip():
                    self.log.log(_level_of(line, self.level), line.rstrip("\r"))
        finally:
            self._inside.yes = False


def _level_of(line: str, default: int) -> int:
    """The level a printed line says it has ("Error: ...", "Warning: ...")."""
    for prefix, level in (("Error", logging.ERROR), ("Warning", logging.WARNING)):
        if line.startswith(prefix):
            return level
    return default


def configure_logging(log_format: str = "text") -> None:
    """INFO and above to stderr, as text or JSON, each record with its request
    id; nothing changes where logging is configured already (an embedding
    application's own). With JSON, what is printed to stderr becomes records
    too, so that every line is JSON."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format must be one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    formatter = JsonFormatter() if log_format == "json" else TextFormatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    configured = bool(logging.getLogger().handlers)
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    # faiss tells at INFO that it fell back from its AVX512 build by logging
    # the ModuleNotFoundError, which reads as a failure at every start
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    if log_format == "json" and not configured:
        sys.stderr = StderrToLog(sys.stderr)
