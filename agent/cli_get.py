"""`domas get`: download a dataset (by PID) or one file (by URL) from the data service.

The download is an ordinary copy run by the copy engine with the read-only HTTP storage as its
source: many ranged GETs in flight, a resume journal per file (running the same command again
continues), every chunk read back from the local disk, and the folded adler32 of what arrived
compared with the server's `Digest: adler32=` before the file takes its final name.
Files the server lists come to DEST/<their path in the dataset>; a listed path that could leave
DEST is refused (UnsafePath), never followed.
"""

from __future__ import annotations

import argparse
import os
import posixpath
from urllib.parse import quote, unquote, urlsplit

from domas.config import Config
from domas.errors import DomasError, NotFound, PermissionDenied, ServerRefused, UnsafePath, UsageError

from .cli_copy import copy_config, exit_code, print_summary, run_async
from .expand import Expansion, FileJob
from .storage import Stat, Storage, resolve
from .storage.http import HTTPStorage, resolve_http

GET_HELP = """\
Download a dataset, or one file, from the facility's data service: verified, resumable, with many
chunks in flight.

Give a dataset PID to download all its files into DEST (each under its path in the dataset), or a
file's download URL (as the portal links it) to download that file. Every file is checked against
the catalogue's adler32, which the server sends in its Digest header; a file that does not match is
not given its final name. An interrupted download continues where it stopped when the same command
runs again; files already downloaded are skipped.

The data service is --server, else $DOMAS_SERVER, else http://<controller.http_listen>. Datasets under
embargo and services with a token need the facility token: --token, or better $DOMAS_TOKEN (a token
on the command line is visible to other users of the machine).

examples:
  domas get CSTR:17058.11.HEPS.2025-0042.3XK9QW1M0ABC ./scan42/
  domas get --server https://data.heps.example 10.12345/heps.b1.XYZ /data/mine --streams 16
  domas get http://127.0.0.1:8400/api/v1/datasets/CSTR:17058.11.HEPS.B1.X/files/a.h5/content .
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("get", help="download a dataset or a file from the data service", description=GET_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="PID|URL", help="a dataset PID, or a file's http(s) download URL")
    p.add_argument("dest", metavar="DEST", help="local directory (or file name, for one URL)")
    p.add_argument("--server", help="data service URL (default: $DOMAS_SERVER or http://127.0.0.1:8400)")
    p.add_argument("--token", help="the facility token (default: $DOMAS_TOKEN)")
    p.add_argument("--streams", type=int, help="chunks in flight (default: 4 per core, at least 4)")
    p.add_argument("--chunk-size", help="bytes per ranged request, e.g. 8MiB (default), 1MiB")
    p.add_argument("--no-resume", action="store_true", help="ignore and do not write resume journals")
    p.add_argument("--force", action="store_true", help="download even files that are already up to date")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    p.set_defaults(handler=run_get, verify=None)


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


def expand_dataset(server: str, token: str, pid: str, dest: str) -> tuple[Expansion, dict]:
    """One FileJob per file the service can serve; the others become problems, reported."""
    store, base = resolve_http(server, token)
    base = base.rstrip("/")
    dataset = f"{base}/api/v1/datasets/{quote(pid, safe=':/')}"
    info = {k: v for k, v in store.get_json(dataset, {"limit": 1}).items()
            if k not in ("files", "next", "offset", "limit")}
    if not info.get("downloadable", True):
        raise PermissionDenied(f"{info.get('embargo_reason') or f'dataset {pid} may not be downloaded'}; "
                               "nothing was downloaded")
    dst_store, dst_root = _destination(dest)
    out = Expansion(dirs=[(dst_store, dst_root)])
    for f in store.json_lines(f"{dataset}/files"):
        _add_file(out, store, base, info.get("pid", pid), f, dst_store, dst_root)
    out.dirs = list(dict.fromkeys(out.dirs))
    return out, info


def _add_file(out: Expansion, store: HTTPStorage, base: str, pid: str, f: dict, dst_store: Storage,
              dst_root: str) -> None:
    src_path = f"{base}/api/v1/datasets/{quote(pid, safe=':/')}/files/{quote(str(f.get('path')), safe='/')}/content"
    try:
        rel = safe_relpath(f.get("path"))
        if not f.get("available", True):
            raise NotFound(f"{store.url(src_path)}: no verified copy is online; ask the facility to restore it")
        st = Stat(path=src_path, size=int(f["size"]), mtime=float(f.get("mtime") or 0.0), ident=str(f.get("etag", "")))
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
    out.jobs.append(FileJob(store, src_path, st, dst_store, posixpath.join(dst_root, rel)))


def url_file_name(path: str) -> str:
    """The file name a download URL stands for (the data service's …/files/<path>/content)."""
    p = unquote(urlsplit(path).path)
    if "/files/" in p and p.endswith("/content"):
        p = p[:-len("/content")]
    name = posixpath.basename(p.rstrip("/"))
    if name in ("", ".", "..") or "\0" in name:
        raise UsageError(f"{path}: the URL names no file; give DEST as a file name")
    return name


def expand_url(url: str, token: str, dest: str) -> Expansion:
    store, path = resolve_http(url, token)
    st = store.stat_follow(path)
    dst_store, dst_root = resolve(dest)
    try:
        into_dir = dest.endswith("/") or dst_store.stat_follow(dst_root).is_dir
    except NotFound:
        into_dir = False
    target = posixpath.join(dst_root, url_file_name(path)) if into_dir else dst_root
    return Expansion(jobs=[FileJob(store, path, st, dst_store, target)],
                     dirs=[(dst_store, posixpath.dirname(target) or "/")])


def run_get(args: argparse.Namespace, cfg: Config) -> int:
    from .engine import CopyEngine
    from .progress import make_reporter

    cfg = copy_config(args, cfg)
    token = args.token if args.token is not None else cfg.controller.token
    if is_url(args.target):
        exp, info = expand_url(args.target, token, args.dest), {}
    else:
        exp, info = expand_dataset(server_url(args, cfg), token, args.target, args.dest)
    engine = CopyEngine(cfg, reporter=make_reporter(args.quiet, args.json), force=args.force)
    acct = run_async(engine.run(exp))
    _print_summary(args, acct.summary(), info)
    return exit_code(acct)


def _print_summary(args: argparse.Namespace, summary: dict, info: dict) -> None:
    if args.json and info:
        summary["dataset"] = {k: info.get(k) for k in ("pid", "title", "beamtime", "file_count", "bytes")}
    print_summary(args, summary, "downloaded")