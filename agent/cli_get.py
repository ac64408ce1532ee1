"""`domas get`: download a dataset (by PID) or one file (by URL) from the data service.

The download is an ordinary copy run by the copy engine with the read-only HTTP storage as its
source: many ranged GETs in flight, a resume journal per file (running the same command again
continues), every chunk read back from the local disk, and the folded adler32 of what arrived
compared with the server's `Digest: adler32=` before the file takes its final name.
Files the server lists come to DEST/<their path in the dataset>; a listed path that could leave
DEST is refused (UnsafePath), never followed.

Memory: chunks stream to their place in the destination file; a file is never held whole. The
chunks in flight are what a download holds (streams x chunk size, each read, hashed, written and
read back), so downloads default to 1 MiB chunks: 16 streams (the default, GET_STREAMS) stay near
80 MiB resident over a 1 Gbit/s link, under 150 MiB on a local one (8 MiB chunks held ~650 MiB) at
the same speed. A fresh download's first `streams` chunks are asked for early, while the engine
imports (_EarlyStart); until the engine has taken them they add to the chunks in flight, so for a
moment up to twice `streams` ranges may be open.
Verification: a file is "verified" when the adler32 of the bytes received equals the server's
Digest header or the catalogue's sum in the listing; a received file whose adler32 or whole-file
xxh3 differs from the catalogue's is removed and reported failed (xxh3 catches changes adler32
cannot see); one with no sum to compare is kept and reported "unverified".
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import posixpath
import sys
import threading
import time
from urllib.parse import quote, unquote, urlsplit

from domas.config import Config, default_streams
from domas.errors import (ChecksumMismatch, DomasError, NotFound, PermissionDenied, ServerRefused, UnsafePath,
                          UsageError)
from domas.loop import run_async
from domas.transfer.expand import Expansion, FileJob
from domas.transfer.parts import part_path
from domas.transfer.plan import chunk_at, chunk_count
from domas.transfer.storage import Stat, Storage, resolve
from domas.transfer.storage.http import HTTPStorage, resolve_http

from .cli_copy import copy_config, exit_code, print_summary, stream_count

GET_HELP = """\
Download a dataset, or one file, from the facility's data service: verified, resumable, with many
chunks in flight.

Give a dataset PID to download all its files into DEST (each under its path in the dataset), or a
file's download URL (as the portal links it) to download that file. Every file is checked against
the catalogue's adler32, which the server sends in its Digest header; a file that does not match is
not given its final name. An interrupted download continues where it stopped when the same command
runs again; files already downloaded are listed as up to date and skipped. Each file is reported
verified (its adler32 matched the server's Digest or the catalogue's sum) or unverified (no sum to
compare with); a file whose bytes do not match the catalogue is removed and reported failed.

The data service is --server, else $DOMAS_SERVER, else http://<controller.http_listen>. Datasets under
embargo and services with a token need the facility token: --token, or better $DOMAS_TOKEN (a token
on the command line is visible to other users of the machine).

examples:
  domas get CSTR:17058.11.HEPS.2025-0042.3XK9QW1M0ABC ./scan42/
  domas get --server https://data.heps.example 10.12345/heps.b1.XYZ /data/mine --streams 16
  domas get http://127.0.0.1:8400/api/v1/datasets/CSTR:17058.11.HEPS.B1.X/files/a.h5/content .
  domas get --manifest CSTR:17058.11.HEPS.B1.X.manifest ./selected/    # files chosen in the portal
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("get", help="download a dataset or a file from the data service", description=GET_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="PID|URL", help="a dataset PID, or a file's http(s) download URL")
    p.add_argument("dest", metavar="DEST", nargs="?", help="local directory (or file name, for one URL)")
    p.add_argument("--manifest", metavar="FILE", help="download the files a portal manifest lists (one URL a line) "
                                                      "into the directory given as the only argument")
    p.add_argument("--server", help="data service URL (default: $DOMAS_SERVER, else http://<controller.http_listen> "
                                    "of the configuration, http://127.0.0.1:8400 unless set)")
    p.add_argument("--token", help="the facility token (default: $DOMAS_TOKEN)")
    p.add_argument("--streams", type=stream_count, help=f"chunks in flight (default: {GET_STREAMS}, or 4 per core "
                                                        "when more, unless copy.streams is set)")
    p.add_argument("--chunk-size", help=f"bytes per ranged request (default {GET_CHUNK}: memory stays near "
                                        "streams x 3 chunks), e.g. 8MiB")
    p.add_argument("--no-resume", action="store_true", help="ignore and do not write resume journals")
    p.add_argument("--force", action="store_true", help="download even files that are already up to date")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    p.set_defaults(handler=run_get, verify=None, exit_at_once=True)    # files closed and durable: no teardown


GET_CHUNK = "1MiB"
# Chunks in flight of a download unless --streams or copy.streams says otherwise. Over a tbf-shaped
# 100 Mbit/s link 16 ranges in flight reach 0.993-0.996x iperf3 where 8 reach 0.988-0.994x (runs I,
# J and an A/B of 4 pairs, benchmarks/results/get_link.md), the same at 1 Gbit/s; 16 stay near 80 MiB.
GET_STREAMS = 16


def is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


def server_url(args: argparse.Namespace, cfg: Config, env=os.environ) -> str:
    return (args.server or env.get("DOMAS_SERVER") or f"http://{cfg.controller.http_listen}").rstrip("/")


def safe_relpath(rel: str) -> str:
    """A dataset file's path as the server listed it, refused if it could leave DEST."""
    parts = rel.split("/") if isinstance(rel, str) else [""]
    if not rel or "\0" in rel or "\\" in rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UnsafePath(f"the server listed the file path {rel!r}, which would leave the destination; skipped")
    return rel


def _destination(dest: str) -> tuple[Storage, str]:
    store, root = resolve(dest)
    try:
        st = store.stat_follow(root)
    except NotFound:
        return store, root
    if not st.is_dir:
        raise UsageError(f"{dest} is a file; give a directory to download a dataset into")
    return store, root


class _Background:
    """One call run in a thread from now on; result() waits for it and returns or raises what it did."""

    def __init__(self, fn, *args) -> None:
        self._fn, self._args, self._value, self._error = fn, args, None, None
        self._thread = threading.Thread(target=self._run, name="domas-get-listing", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._fn(*self._args)
        except BaseException as e:          # handed to the caller of result(), which raises it
            self._error = e

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


class _EarlyStart:
    """A fresh download's first `count` chunks, asked for as soon as the listing names their files
    (HTTPStorage.read_early), so that bytes travel while the copy engine imports. Only for a file
    with nothing at its destination yet (no file, no part file: the engine will read it all, so
    no byte is fetched twice), and only once the dataset's record says it may be downloaded."""

    def __init__(self, chunk_size: int, count: int, allowed) -> None:
        self.chunk_size, self.left, self._allowed = chunk_size, count, allowed

    def offer(self, job: FileJob) -> FileJob:
        """The job, stamped with the time its first chunks were asked for when they were."""
        if self.left <= 0 or job.src_stat.size == 0 or not _nothing_at(job.dst_store, job.dst_path):
            return job
        if not self._allowed():
            self.left = 0
            return job
        n = min(self.left, chunk_count(job.src_stat.size, self.chunk_size))
        self.left -= n
        chunks = (chunk_at(i, job.src_stat.size, self.chunk_size) for i in range(n))
        began = time.monotonic()
        job.src_store.read_early(job.src_stat, [(c.offset, c.length) for c in chunks])
        return dataclasses.replace(job, began=began)


def _nothing_at(store: Storage, path: str) -> bool:
    """True when a local destination has neither its file nor its part file yet."""
    if store.scheme != "file":
        return False
    for p in (path, part_path(path)):
        try:
            store.stat(p)
            return False
        except NotFound:
            continue
        except DomasError:
            return False
    return True


def _downloadable(info_call: "_Background") -> bool:
    try:
        return bool(info_call.result().get("downloadable", True))
    except DomasError:
        return False


def expand_dataset(server: str, token: str, pid: str, dest: str, meanwhile=lambda: None,
                   early: tuple[int, int] | None = None) -> tuple[Expansion, dict, dict[str, dict]]:
    """One FileJob per file the service can serve (the others become problems, reported), the
    dataset's record, and the catalogue's adler32 of each destination URL.

    The dataset's record and its file listing are asked for at once, on two connections, and
    `meanwhile` (the caller's own start-up: importing the engine) runs while they travel. What the
    listing says of each file is remembered by the HTTP storage in place of a HEAD. With `early`
    (chunk size, count) the first `count` chunks are asked for as soon as the listing names their
    files (_EarlyStart)."""
    store, base = resolve_http(server, token)
    base = base.rstrip("/")
    dataset = f"{base}/api/v1/datasets/{quote(pid, safe=':/')}"
    dst_store, dst_root = _destination(dest)
    info_call = _Background(store.get_json, dataset, {"limit": 1})
    starter = _EarlyStart(*early, lambda: _downloadable(info_call)) if early else None
    files_call = _Background(_list_files, store, base, pid, dataset, dst_store, dst_root, starter)
    meanwhile()
    info = {k: v for k, v in info_call.result().items() if k not in ("files", "next", "offset", "limit")}
    if not info.get("downloadable", True):
        raise PermissionDenied(f"{info.get('embargo_reason') or f'dataset {pid} may not be downloaded'}; "
                               "nothing was downloaded")
    out, sums = files_call.result()
    return out, info, sums


def _list_files(store: HTTPStorage, base: str, pid: str, dataset: str, dst_store: Storage,
                dst_root: str, starter: _EarlyStart | None = None) -> tuple[Expansion, dict[str, dict]]:
    out, sums = Expansion(dirs=[(dst_store, dst_root)]), {}
    for f in store.json_lines(f"{dataset}/files"):
        before = len(out.jobs)
        _add_file(out, store, base, pid, f, dst_store, dst_root, sums)
        if starter is not None and len(out.jobs) > before and out.jobs[-1].src_stat.ident:
            out.jobs[-1] = starter.offer(out.jobs[-1])
    out.dirs = list(dict.fromkeys(out.dirs))
    return out, sums


def _add_file(out: Expansion, store: HTTPStorage, base: str, pid: str, f: dict, dst_store: Storage,
              dst_root: str, sums: dict[str, dict]) -> None:
    src_path = f"{base}/api/v1/datasets/{quote(pid, safe=':/')}/files/{quote(str(f.get('path')), safe='/')}/content"
    try:
        rel = safe_relpath(f.get("path"))
        if not f.get("available", True):
            raise NotFound(f"{store.url(src_path)}: no verified copy is online; ask the facility to restore it")
        st, known = _listed(src_path, f)
    except (KeyError, TypeError, ValueError):
        out.problems.append((store.url(src_path), ServerRefused(
            f"{store.url(src_path)}: the server's record of this file is malformed; skipped")))
        return
    except DomasError as e:
        out.problems.append((store.url(src_path), e))
        return
    parent = posixpath.dirname(rel)
    if parent:
        out.dirs.append((dst_store, posixpath.join(dst_root, parent)))
    job = FileJob(store, src_path, st, dst_store, posixpath.join(dst_root, rel))
    out.jobs.append(job)
    if known:
        sums[job.dst_url] = known
    _remember(store, st, known)


def _listed(path: str, f: dict) -> tuple[Stat, dict[str, str]]:
    """What a listing's record says of the file at `path`: its stat (the ETag as ident) and the
    catalogue's sums; KeyError, TypeError or ValueError when the record is malformed."""
    st = Stat(path=path, size=int(f["size"]), mtime=float(f.get("mtime") or 0.0), ident=str(f.get("etag", "")))
    return st, {k: f[k].lower() for k in ("adler32", "xxh3") if isinstance(f.get(k), str) and f[k]}


def _remember(store: HTTPStorage, st: Stat, known: dict[str, str]) -> None:
    """A record with an ETag and an adler32 says all a HEAD would: the storage sends none for it."""
    if st.ident and known.get("adler32"):
        store.remember(st, known["adler32"])


def url_file_name(path: str) -> str:
    """The file name a download URL stands for (the data service's …/files/<path>/content)."""
    p = unquote(urlsplit(path).path)
    if "/files/" in p and p.endswith("/content"):
        p = p[:-len("/content")]
    name = posixpath.basename(p.rstrip("/"))
    if name in ("", ".", "..") or "\0" in name:
        raise UsageError(f"{path}: the URL names no file; give DEST as a file name")
    return name


def expand_url(url: str, token: str, dest: str, meanwhile=lambda: None,
               early: tuple[int, int] | None = None) -> Expansion:
    """The one FileJob of a file's URL. Its HEAD travels while `meanwhile` runs (the caller's
    start-up), and with `early` (chunk size, count) its first chunks are asked for at once."""
    store, path = resolve_http(url, token)
    dst_store, dst_root = resolve(dest)
    try:
        into_dir = dest.endswith("/") or dst_store.stat_follow(dst_root).is_dir
    except NotFound:
        into_dir = False
    target = posixpath.join(dst_root, url_file_name(path)) if into_dir else dst_root

    def job() -> FileJob:
        found = FileJob(store, path, store.stat_follow(path), dst_store, target)
        return _EarlyStart(*early, lambda: True).offer(found) if early and found.src_stat.ident else found

    head = _Background(job)
    meanwhile()
    return Expansion(jobs=[head.result()], dirs=[(dst_store, posixpath.dirname(target) or "/")])


def manifest_urls(text: str) -> list[str]:
    """The URLs of a manifest: one a line; blank lines and '#' comments are skipped."""
    urls = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    for url in urls:
        if not is_url(url):
            raise UsageError(f"the manifest line {url[:100]!r} is not an http(s) URL; use a manifest the portal made")
    return list(dict.fromkeys(urls))


def manifest_relpath(url: str) -> str:
    """Where a manifest's content URL goes below DEST: the file's path in its dataset."""
    p = unquote(urlsplit(url).path)
    if "/files/" not in p or not p.endswith("/content"):
        raise UsageError(f"{url}: not a data service file URL (…/files/PATH/content)")
    return safe_relpath(p.split("/files/", 1)[1][:-len("/content")])


LIST_FROM = 16      # a manifest naming this many files of one dataset reads its listing once instead of a HEAD each


def expand_manifest(manifest: str, token: str, dest: str, workers: int = 8) -> Expansion:
    """One FileJob per manifest URL. What the service knows of each file (size, ETag, sum) comes
    from its dataset's listing, read once, for a dataset the manifest names LIST_FROM files of or
    more; the others are asked with HEADs, `workers` at a time (one after the other, 1 000 files
    over a link with 50 ms of round trip are 50 s of HEADs before the first byte)."""
    try:
        with open(manifest, encoding="utf-8") as fh:
            urls = manifest_urls(fh.read())
    except OSError as e:
        raise UsageError(f"cannot read the manifest {manifest}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise UsageError(f"the manifest {manifest} is not UTF-8 text (one URL a line); use a manifest the portal "
                         "made") from None
    if not urls:
        raise UsageError(f"the manifest {manifest} lists no file")
    dst_store, dst_root = _destination(dest)
    out = Expansion(dirs=[(dst_store, dst_root)])
    _remember_listings(urls, token)

    def stat(url: str):
        try:
            rel = manifest_relpath(url)
            store, path = resolve_http(url, token)
            return rel, store, path, store.stat_follow(path)
        except DomasError as e:
            return e

    from concurrent.futures import ThreadPoolExecutor     # here: a dataset download starts without it

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="domas-get-stat") as pool:
        found = list(pool.map(stat, urls))
    for url, got in zip(urls, found):
        if isinstance(got, DomasError):
            out.problems.append((url, got))
            continue
        rel, store, path, st = got
        if posixpath.dirname(rel):
            out.dirs.append((dst_store, posixpath.join(dst_root, posixpath.dirname(rel))))
        out.jobs.append(FileJob(store, path, st, dst_store, posixpath.join(dst_root, rel)))
    out.dirs = list(dict.fromkeys(out.dirs))
    return out


def _remember_listings(urls: list[str], token: str) -> None:
    """For each dataset the manifest names LIST_FROM files of or more, read its listing once and
    let the HTTP storage remember what it says of those files (as a dataset download does). A
    listing that cannot be read leaves them to their HEADs."""
    groups: dict[str, list[str]] = {}
    for url in urls:
        if "/files/" in url and url.endswith("/content"):
            groups.setdefault(url.split("/files/", 1)[0], []).append(url)
    for dataset_url, members in groups.items():
        if len(members) < LIST_FROM:
            continue
        try:
            wanted = {manifest_relpath(u): resolve_http(u, token) for u in members}
            store, dataset = resolve_http(dataset_url, token)
            for f in store.json_lines(f"{dataset}/files"):
                target = wanted.get(f.get("path")) if isinstance(f, dict) else None
                if target is not None:
                    with contextlib.suppress(KeyError, TypeError, ValueError):    # a malformed record: its HEAD
                        _remember(target[0], *_listed(target[1], f))
        except (DomasError, TypeError):        # no listing, or one whose paths are not strings: HEADs
            continue


def _load_engine() -> None:
    """Import the copy engine (and asyncio with it): done while the dataset listing travels."""
    from . import engine  # noqa: F401


def _refuse_empty(args: argparse.Namespace) -> None:
    """An empty PID, URL or destination is a mistake (a variable that was not set), never the
    service's root nor the current directory."""
    dest = args.target if args.manifest else args.dest
    if not args.manifest and not args.target.strip():
        raise UsageError("the PID or URL to download is empty (''); give a dataset PID or a file's URL")
    if dest is not None and not dest.strip():
        raise UsageError("the destination is empty (''); give a directory, e.g. . for the current one")


def run_get(args: argparse.Namespace, cfg: Config) -> int:
    if args.chunk_size is None:
        args.chunk_size = GET_CHUNK
    if args.streams is None and cfg.copy.streams == default_streams():
        args.streams = max(GET_STREAMS, cfg.copy.streams)
    cfg = copy_config(args, cfg)
    token = args.token if args.token is not None else cfg.controller.token
    began, early = time.monotonic(), (cfg.copy.chunk_size, cfg.copy.streams)
    _refuse_empty(args)
    if args.manifest:
        if args.dest is not None:
            raise UsageError("with --manifest give only the destination directory: domas get --manifest FILE DEST")
        exp, info, sums = expand_manifest(args.manifest, token, args.target, cfg.copy.streams), {}, {}
    elif args.dest is None:
        raise UsageError("give a destination: domas get PID|URL DEST")
    elif is_url(args.target):
        exp, info, sums = expand_url(args.target, token, args.dest, _load_engine, early), {}, {}
    else:
        exp, info, sums = expand_dataset(server_url(args, cfg), token, args.target, args.dest, _load_engine, early)
    from .engine import CopyEngine
    from .progress import make_reporter

    engine = CopyEngine(cfg, reporter=make_reporter(args.quiet, args.json), force=args.force)
    engine.acct.started = began        # the download's time includes its listing (and its early chunks)
    try:
        acct = run_async(engine.run(exp), fast_loop=False)
    except KeyboardInterrupt:
        summary = engine.acct.summary()
        summary["interrupted"] = True
        _print_summary(args, summary, info, {})
        print("domas get: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    checked = check_files(acct.files, exp.jobs, sums)
    _print_summary(args, acct.summary(), info, checked)
    return exit_code(acct)


def check_files(files, jobs_run: list[FileJob], sums: dict[str, dict[str, str]]) -> dict[str, str]:
    """verified / unverified for each downloaded file (by destination URL), given the catalogue's
    sums ({"adler32", "xxh3"} by destination); a file whose bytes do not match a catalogue sum is
    removed and its FileStats marked failed. The whole-file xxh3 (when the engine computed it and
    the catalogue has one) also catches what adler32 alone can miss: equal changes at equally
    spaced offsets that cancel out in its two running sums."""
    jobs = {job.dst_url: job for job in jobs_run}
    out: dict[str, str] = {}
    for fs in files:
        job = jobs.get(fs.destination)
        if fs.status != "done" or job is None or not fs.adler32:
            continue
        known = sums.get(fs.destination, {})
        if known.get("xxh3") and fs.xxh3 and known["xxh3"] != fs.xxh3:
            _reject(fs, job, "xxh3", fs.xxh3, known["xxh3"])
            continue
        digest = known.get("adler32") or _server_digest(job)
        if digest is None:
            out[fs.destination] = "unverified"
        elif digest == fs.adler32:
            out[fs.destination] = "verified"
        else:
            _reject(fs, job, "adler32", fs.adler32, digest)
    return out


def _server_digest(job: FileJob) -> str | None:
    try:
        found = job.src_store.checksum(job.src_path, "adler32")
    except DomasError:
        return None
    return found.lower() if found else None


def _reject(fs, job: FileJob, algo: str, got: str, expected: str) -> None:
    err = ChecksumMismatch(f"{fs.destination}: the {algo} of the bytes received, {got}, differs from the "
                           f"catalogue's {expected}; the file was removed, download it again")
    try:
        job.dst_store.remove(job.dst_path)
    except DomasError:
        pass
    fs.status, fs.error, fs.error_kind, fs.exit_code = "failed", str(err), err.kind, err.exit_code


def _print_summary(args: argparse.Namespace, summary: dict, info: dict, checked: dict[str, str]) -> None:
    from .progress import human_bytes      # here: the listing goes out before the reporter is imported

    if args.json and info:
        summary["dataset"] = {k: info.get(k) for k in ("pid", "title", "beamtime", "file_count", "bytes")}
    for f in summary["files"]:
        f["verification"] = checked.get(f["destination"]) if f["status"] == "done" else None
    t = summary["totals"]
    t["done"] = sum(f["status"] == "done" for f in summary["files"])
    t["failed"] = sum(f["status"] == "failed" for f in summary["files"])
    t["verified"] = sum(v == "verified" for v in checked.values())
    t["unverified"] = sum(v == "unverified" for v in checked.values())
    if args.json:
        print_summary(args, summary, "downloaded")
        return
    if not args.quiet:
        for f in summary["files"]:
            if f["verification"] == "unverified":
                print(f"unverified  {f['destination']}: neither the server (no Digest) nor the catalogue has its "
                      "checksum; the bytes could not be checked", file=sys.stderr)
        print(f"{t['done']} downloaded ({t['verified']} verified, {t['unverified']} unverified), {t['skipped']} up "
              f"to date, {t['failed']} failed: {human_bytes(t['bytes_copied'])} in {t['seconds']:.2f} s "
              f"({human_bytes(t['bytes_per_second'])}/s), {t['retries']} retries", file=sys.stderr)