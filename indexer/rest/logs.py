"""The server's log: text lines as ever, or one JSON object a line
(`indexer serve --log-format json`) with a line per request; and the request
id that every line logged while a request runs carries."""

from __future__ import annotations

import json
import logging
import os
import re
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


def configure_logging(log_format: str = "text") -> None:
    """INFO and above to stderr, as text or JSON, each record with its request
    id; nothing changes where logging is configured already (an embedding
    application's own)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format must be one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    formatter = JsonFormatter() if log_format == "json" else None
    handler.setFormatter(formatter or logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
