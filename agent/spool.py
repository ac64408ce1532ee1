"""The agent's durable report spool: finished-chunk reports survive a dead controller or agent.

Invariants:
- A report is in the spool (SQLite in WAL mode) before it is sent, and leaves it only when the
  controller has acknowledged it (accepted, duplicate or rejected). synchronous=NORMAL: a killed
  agent loses nothing; a power loss may lose the last reports, whose leases then expire and whose
  chunks are copied again (rework, never a wrong record).
- Replay is oldest first. The controller de-duplicates by report id, so a report sent twice
  (crash between send and ack) is counted once: nothing lost, nothing reported twice.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from domas.errors import from_oserror
from domas.sqlite import open_db

_SCHEMA = "CREATE TABLE IF NOT EXISTS reports (seq INTEGER PRIMARY KEY AUTOINCREMENT, " \
          "report_id TEXT UNIQUE NOT NULL, payload BLOB NOT NULL, spooled_at REAL NOT NULL DEFAULT 0)"


class ReportSpool:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise from_oserror(e, str(self.path.parent)) from e
        self._db = open_db(self.path, what="agent's report spool")
        self._db.execute(_SCHEMA)
        self._lock = threading.Lock()

    def put(self, report_id: str, payload: bytes) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO reports (report_id, payload, spooled_at) VALUES (?, ?, ?)",
                             (report_id, payload, time.time()))

    def remove(self, report_ids) -> None:
        ids = [(r,) for r in report_ids]
        if ids:
            with self._lock:
                self._db.executemany("DELETE FROM reports WHERE report_id = ?", ids)

    def pending(self, limit: int = 1000, older_than: float | None = None) -> list[tuple[str, bytes]]:
        """Spooled reports, oldest first; `older_than` (seconds) keeps only those spooled before then."""
        cutoff = time.time() - older_than if older_than is not None else float("inf")
        with self._lock:
            return list(self._db.execute(
                "SELECT report_id, payload FROM reports WHERE spooled_at < ? ORDER BY seq LIMIT ?", (cutoff, limit)))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM reports").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
