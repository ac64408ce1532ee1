"""Turn `domas copy SRC... DST` into a list of file jobs, as `cp -r` would lay them out.

Rules (checked by tests/test_expand.py):
- As rsync lays them out, so that running the same command again maps every file to the same
  destination (which resume needs): a source directory lands inside DST under its own name, or,
  written with a trailing '/', its contents land directly in DST. One source file and a DST that
  is not an existing directory (and has no trailing '/') makes DST the destination file;
  otherwise files land inside DST under their base names.
- Directories are walked recursively; empty directories are recreated; odd names are kept.
- A symlink inside a tree is followed only when it resolves to a file inside the source tree;
  one pointing outside the tree is reported (UnsafePath) and skipped, never followed. Symlinked
  directories are not followed (no loops). A source named on the command line is followed.
- A destination inside the source tree, or a destination that is the source itself, is refused.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from domas.errors import (DomasError, InvalidMessage, NotFound, SameFile, StorageError, UnsafePath, Unsupported,
                          UsageError)

from .storage import Stat, Storage, resolve


@dataclass(frozen=True)
class FileJob:
    """One file to copy: source and destination, each a storage and a path, and the source's stat."""

    src_store: Storage
    src_path: str
    src_stat: Stat
    dst_store: Storage
    dst_path: str
    began: float | None = None      # monotonic time its bytes began to travel before a copy took it up

    @property
    def src_url(self) -> str:
        return self.src_store.url(self.src_path)

    @property
    def dst_url(self) -> str:
        return self.dst_store.url(self.dst_path)


@dataclass
class Expansion:
    """What a copy request expands to: file jobs, directories to create, and problems to report."""

    jobs: list[FileJob] = field(default_factory=list)
    dirs: list[tuple[Storage, str]] = field(default_factory=list)     # destination dirs to create
    problems: list[tuple[str, DomasError]] = field(default_factory=list)  # (source url, error)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _stat_or_none(store: Storage, path: str) -> Stat | None:
    try:
        return store.stat_follow(path)
    except NotFound:
        return None


def expand(sources: list[str], destination: str, max_files: int | None = None) -> Expansion:
    """Plan every file copy; problems with one source never stop the others. With `max_files`,
    planning stops with InvalidMessage as soon as files plus directories exceed it."""
    if not sources:
        raise UsageError("give at least one source and a destination")
    dst_store, dst_root = resolve(destination)
    dst_stat = _stat_or_none(dst_store, dst_root)
    if dst_stat is not None and not dst_stat.is_dir and (len(sources) > 1 or destination.endswith("/")):
        raise UsageError(f"{destination} is not a directory, but several sources (or a trailing '/') need one")
    into_dir = len(sources) > 1 or destination.endswith("/") or (dst_stat is not None and dst_stat.is_dir)
    out = Expansion()
    for src in sources:
        try:
            _expand_one(src, dst_store, dst_root, into_dir, out, max_files)
        except InvalidMessage:
            raise
        except DomasError as e:
            out.problems.append((src, e.with_traceback(None)))     # no frames kept per problem
    return out


def _too_many(out: Expansion, max_files: int | None) -> None:
    if max_files is not None and len(out.jobs) + len(out.dirs) > max_files:
        raise InvalidMessage(f"the sources hold more than {max_files} files and directories, the most one "
                             "transfer takes; split the transfer")


def _expand_one(src: str, dst_store: Storage, dst_root: str, into_dir: bool, out: Expansion,
                max_files: int | None = None) -> None:
    src_store, src_path = resolve(src)
    contents_only = src.endswith("/")
    src_path = src_path.rstrip("/") or "/"
    st = src_store.stat_follow(src_path)
    name = posixpath.basename(src_path) or "root"
    if st.is_dir:
        target = dst_root if contents_only else posixpath.join(dst_root, name)
    else:
        target = posixpath.join(dst_root, name) if into_dir else dst_root
    _refuse_overlap(src_store, src_path, st, dst_store, target)
    if st.special:
        raise Unsupported(f"{src_store.url(src_path)} is {st.special}, not a regular file; only regular files are copied")
    if not st.is_dir:
        out.jobs.append(FileJob(src_store, src_path, st, dst_store, target))
        _too_many(out, max_files)
        return
    out.dirs.append((dst_store, target))
    real_root = src_store.realpath(src_path)
    for entry in src_store.walk(src_path):
        _too_many(out, max_files)
        rel = entry.path[len(src_path):].lstrip("/")
        dst_path = posixpath.join(target, rel)
        if entry.is_link:
            followed = _follow_link(src_store, entry, real_root, out)
            if followed is not None:
                out.jobs.append(FileJob(src_store, entry.path, followed, dst_store, dst_path))
        elif entry.is_dir:
            out.dirs.append((dst_store, dst_path))
        elif entry.special:     # reading a FIFO waits for a writer forever; a socket cannot be read
            out.problems.append((src_store.url(entry.path), Unsupported(
                f"{src_store.url(entry.path)} is {entry.special}, not a regular file; skipped")))
        else:
            out.jobs.append(FileJob(src_store, entry.path, entry, dst_store, dst_path))
    _too_many(out, max_files)


def _follow_link(store: Storage, entry: Stat, real_root: str, out: Expansion) -> Stat | None:
    real = store.realpath(entry.path)
    if not _inside(real, real_root):
        out.problems.append((store.url(entry.path), UnsafePath(
            f"symlink {store.url(entry.path)} points outside the source tree (to {real}); not followed, skipped")))
        return None
    try:
        st = store.stat_follow(entry.path)
    except NotFound:
        out.problems.append((store.url(entry.path), NotFound(f"symlink {store.url(entry.path)} is dangling; skipped")))
        return None
    except StorageError as e:       # a loop (ELOOP): this link, not the rest of the tree
        out.problems.append((store.url(entry.path), type(e)(f"symlink {store.url(entry.path)} cannot be followed "
                                                            f"({e}); skipped")))
        return None
    if st.is_dir or st.special:
        out.problems.append((store.url(entry.path), UnsafePath(
            f"symlink {store.url(entry.path)} points to a directory; directory links are not followed, skipped")
            if st.is_dir else Unsupported(f"symlink {store.url(entry.path)} points to {st.special}, not a regular "
                                          "file; skipped")))
        return None
    return st


def _refuse_overlap(src_store: Storage, src_path: str, st: Stat, dst_store: Storage, target: str) -> None:
    if src_store is not dst_store:
        return
    real_src, real_dst = src_store.realpath(src_path), dst_store.realpath(target)
    if real_src == real_dst:
        raise SameFile(f"{src_store.url(src_path)} and {dst_store.url(target)} are the same file; nothing copied")
    existing = _stat_or_none(dst_store, target)
    if existing is not None and not st.is_dir and existing.ident and existing.ident == st.ident:
        raise SameFile(f"{src_store.url(src_path)} and {dst_store.url(target)} are the same file; nothing copied")
    if st.is_dir and _inside(real_dst, real_src):
        raise UsageError(f"cannot copy the directory {src_store.url(src_path)} into itself ({dst_store.url(target)})")
