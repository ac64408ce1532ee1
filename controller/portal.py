"""The web portal's pages as HTML strings, from catalogue records: pure, no I/O after import.

Invariants:
- Every value from the catalogue or the request is passed through html.escape before it reaches
  a page; the templates under controller/web/ receive only escaped text or HTML built here.
- Download links point at the REST API's content endpoint (one URL scheme for people and scripts)
  and are left out for files no verified replica serves and for datasets under embargo.
- No JavaScript: every page works as a plain server-rendered document.
"""

from __future__ import annotations

import json
import time
from html import escape
from pathlib import Path
from string import Template
from urllib.parse import quote, urlencode

from domas.controller.catalogue import Dataset, FileRecord

_WEB = Path(__file__).with_name("web")
_TEMPLATES = {name: Template((_WEB / f"{name}.html").read_text(encoding="utf-8"))
              for name in ("base", "index", "dataset", "error")}
_STYLE = (_WEB / "style.css").read_text(encoding="utf-8")


def human_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def utc(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)) if t else "—"


def api_dataset_path(pid: str) -> str:
    return f"/api/v1/datasets/{quote(pid, safe=':/')}"


def content_path(pid: str, relpath: str) -> str:
    return f"{api_dataset_path(pid)}/files/{quote(relpath, safe='/')}/content"


def page_path(pid: str) -> str:
    return f"/datasets/{quote(pid, safe=':/')}"


def title_of(ds: Dataset) -> str:
    title = ds.metadata.get("title") if isinstance(ds.metadata, dict) else None
    return str(title) if title else ds.path.rsplit("/", 1)[-1] or ds.path


def _page(title: str, body: str) -> str:
    return _TEMPLATES["base"].substitute(title=escape(title), style=_STYLE, body=body, root="/")


def _access_badge(ds: Dataset, now: float) -> str:
    if ds.embargo_end is not None and ds.embargo_end > now:
        return f'<span class="badge embargo">embargo until {escape(utc(ds.embargo_end)[:10])}</span>'
    return '<span class="badge verified">open</span>'


def _dataset_row(ds: Dataset, now: float) -> str:
    cells = [f'<a href="{escape(page_path(ds.pid))}">{escape(title_of(ds))}</a>', f"<code>{escape(ds.pid)}</code>",
             escape(ds.beamtime), escape(ds.data_type), str(ds.file_count), human_size(ds.bytes),
             escape(utc(ds.created_at)), _access_badge(ds, now)]
    classes = ["", "", "", "", ' class="num"', ' class="num"', "", ""]
    return "    <tr>" + "".join(f"<td{c}>{v}</td>" for c, v in zip(classes, cells)) + "</tr>"


def render_index(datasets: list[Dataset], form: dict[str, str], now: float, limit: int) -> str:
    """The dataset list with its search form; `form` holds the query as the user typed it."""
    rows = "\n".join(_dataset_row(ds, now) for ds in datasets) or \
        '    <tr><td colspan="8">No dataset matches; clear the search or check the spelling.</td></tr>'
    count = f"{len(datasets)} dataset{'s' if len(datasets) != 1 else ''}"
    if len(datasets) >= limit:
        count += f" (the newest {limit}; narrow the search to see others)"
    body = _TEMPLATES["index"].substitute(
        root="/", rows=rows, count=escape(count),
        **{k: escape(form.get(k, "") or "", quote=True) for k in ("beamtime", "proposal", "pi")})
    return _page("Datasets", body)


def _replica_badges(f: FileRecord) -> str:
    return "".join(f'<span class="badge {escape(r.state)}" title="{escape(r.state)}">{escape(tier)}</span>'
                   for tier, r in sorted(f.replicas.items())) or '<span class="badge">none</span>'


def _file_row(ds: Dataset, f: FileRecord, available: bool, downloadable: bool) -> str:
    if not downloadable:
        link = '<span class="badge embargo">embargoed</span>'
    elif not available:
        link = '<span class="badge failed">no verified copy online</span>'
    else:
        link = f'<a href="{escape(content_path(ds.pid, f.path))}" download>download</a>'
    return (f"    <tr><td><code>{escape(f.path)}</code></td><td class=\"num\">{human_size(f.size)}</td>"
            f"<td><code>{escape(f.adler32 or '—')}</code></td><td>{_replica_badges(f)}</td><td>{link}</td></tr>")


def _metadata_block(ds: Dataset) -> str:
    if not ds.metadata:
        return ""
    text = json.dumps(ds.metadata, indent=2, sort_keys=True, ensure_ascii=False)
    return f"<h2>Metadata</h2>\n<pre><code>{escape(text)}</code></pre>"


def _pager(ds: Dataset, offset: int, limit: int, shown: int, more: bool) -> str:
    if offset == 0 and not more:
        return ""
    parts = [f"files {offset + 1}–{offset + shown} of {ds.file_count}"]
    if offset > 0:
        prev = urlencode({"offset": max(0, offset - limit)})
        parts.append(f'<a href="{escape(page_path(ds.pid))}?{escape(prev)}">previous</a>')
    if more:
        nxt = urlencode({"offset": offset + limit})
        parts.append(f'<a href="{escape(page_path(ds.pid))}?{escape(nxt)}">next</a>')
    return " · ".join(parts)


def render_dataset(ds: Dataset, files: list[tuple[FileRecord, bool]], *, now: float, downloadable: bool,
                   embargo_note: str | None, server: str, offset: int, limit: int, more: bool) -> str:
    """One dataset: facts, metadata and a page of files; `files` pairs each with 'a verified copy serves it'."""
    notice = f'<p class="notice">{escape(embargo_note)}</p>' if embargo_note else ""
    rows = "\n".join(_file_row(ds, f, ok, downloadable) for f, ok in files) or \
        '    <tr><td colspan="5">This dataset has no files yet.</td></tr>'
    body = _TEMPLATES["dataset"].substitute(
        root="/", pid=escape(ds.pid), heading=escape(title_of(ds)), notice=notice,
        beamtime=escape(ds.beamtime), path=escape(ds.path), data_type=escape(ds.data_type),
        state=escape(ds.state), file_count=str(ds.file_count), size=human_size(ds.bytes),
        created=escape(utc(ds.created_at)), server=escape(server), metadata=_metadata_block(ds), rows=rows,
        pager=_pager(ds, offset, limit, len(files), more))
    return _page(title_of(ds), body)


def render_error(heading: str, message: str) -> str:
    body = _TEMPLATES["error"].substitute(root="/", heading=escape(heading), message=escape(message))
    return _page(heading, body)
