"""Durable resume journal: one append-only JSON-lines file per destination file.

Invariants:
- Line 1 is the header: source URL and identity (size, mtime, ctime, ident), destination, chunk
  size. A journal whose header names another identity (a rewrite, even one that put the old mtime
  back, moves the ctime) is never resumed from (transfer/filecore.py decides, FileCore.resume).
- Each further line records one finished chunk with its sums, appended only after the chunk's
  data is durable at the destination, so every journaled chunk is really there.
- A torn last line (crash mid-append) is ignored; the chunk it named is simply copied again.
- The journal lives in the local state directory, keyed by a hash of the destination URL, so
  the same layout serves local and remote destinations.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from domas.errors import from_oserror


@dataclass(frozen=True)
class ChunkRecord:
    """One journaled chunk: made durable (and read back) before this line was written."""

    index: int
    adler32: int
    xxh3: int
    length: int


@dataclass(frozen=True)
class Header:
    """A journal's first line: the copy it belongs to and the source identity it started from."""

    source: str
    destination: str
    size: int
    mtime: float
    ident: str
    chunk_size: int
    ctime: float = 0.0


def journal_path(state_dir: Path, destination_url: str) -> Path:
    key = hashlib.sha256(os.fsencode(destination_url)).hexdigest()[:32]      # any name's bytes
    return state_dir / "journal" / f"{key}.jsonl"


def read_journal(path: Path) -> tuple[Header | None, dict[int, ChunkRecord]]:
    """The header and the chunks recorded in a journal; (None, {}) if absent or unreadable."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, {}
    except OSError as e:
        raise from_oserror(e, str(path)) from e
    lines = text.split("\n")
    try:
        header = Header(**json.loads(lines[0]))
    except (ValueError, TypeError):
        return None, {}
    chunks: dict[int, ChunkRecord] = {}
    for line in lines[1:]:
        try:
            rec = ChunkRecord(**json.loads(line))
        except (ValueError, TypeError):
            continue  # torn or empty line
        chunks[rec.index] = rec
    return header, chunks


class Journal:
    """Appends chunk records durably; safe to call from several worker threads."""

    def __init__(self, path: Path, header: Header, fresh: bool) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if fresh:
                tmp = path.with_suffix(".tmp")
                with open(tmp, "w") as fh:
                    fh.write(json.dumps(header.__dict__) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        except OSError as e:
            raise from_oserror(e, str(path)) from e

    def record(self, rec: ChunkRecord) -> None:
        """Append one record. Its chunk is already durable, so the record needs no flush of its
        own: a killed process loses nothing (the kernel has the write), and a power cut can only
        lose the newest records, whose chunks are then copied again. No lock is held across I/O:
        an O_APPEND write of one short line is placed whole at the end of the file."""
        line = (json.dumps(rec.__dict__) + "\n").encode()
        try:
            os.write(self._fd, line)
        except OSError as e:
            raise from_oserror(e, str(self.path)) from e

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def discard(self) -> None:
        self.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
