"""One log line per event, whatever a file name holds.

`setup_logging()` is how every long-running domas command configures logging: the message part of
each record has its non-printable characters (newline, carriage return, tab, escape, ...) written
as escapes (`\\n`, `\\x1b`), so a file name can neither split a log line nor forge one. Tracebacks
(DOMAS_DEBUG) still follow on their own lines.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def one_line(text: str) -> str:
    """`text` with every non-printable character written as its escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class OneLineFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = one_line(record.message)
        return super().formatMessage(record)


def setup_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
