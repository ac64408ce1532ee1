"""The web portal's pages as HTML strings, from catalogue records: pure, no I/O after import.

Invariants:
- Every value from the catalogue or the request is passed through html.escape before it reaches
  a page; the templates under dataservice/web/ receive only escaped text or HTML built here.
- Download links point at the REST API's content endpoint (one URL scheme for people and scripts)
  and are left out for files no verified replica serves and for datasets under embargo.
- No JavaScript: every page works as a plain server-rendered document (folder tree: <details>;
  file selection: a GET form of checkboxes that returns a manifest for `domas get --manifest`).
- Every asset is served by the service itself (the stylesheet at STYLE_PATH, local Swagger UI): no
  CDN, and nothing inline, so the Content-Security-Policy (httpedge.py) allows only 'self'.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import time
from html import escape
from pathlib import Path
from string import Template
from urllib.parse import quote, urlencode

from domas.catalogue import Dataset, FileRecord
from domas.catalogue.search import FILTERS, SORTS, display_title

_WEB = Path(__file__).with_name("web")
_TEMPLATES = {name: Template((_WEB / f"{name}.html").read_text(encoding="utf-8"))
              for name in ("base", "index", "dataset", "error", "login")}
STYLE = (_WEB / "style.css").read_text(encoding="utf-8")
STYLE_TAG = hashlib.sha256(STYLE.encode()).hexdigest()[:12]     # in its link: a changed stylesheet is fetched anew
STYLE_PATH = "/assets/style.css"


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
    """The metadata's title, else its sample name, else the path's last two parts ("2025-0042/raw",
    not a bare "raw"): the title the search sorts by."""
    return display_title(ds.path, ds.metadata)


def manifest_path(pid: str) -> str:
    return f"{page_path(pid)}/manifest"


FORM_TOKEN = "csrf"       # the hidden field of every form that posts (checked against its cookie)


def _token_field(form_token: str) -> str:
    return f'<input type="hidden" name="{FORM_TOKEN}" value="{escape(form_token, quote=True)}">'


def _who(user: str, form_token: str) -> str:
    if not user:
        return '<a href="/login">Log in</a>'
    return (f'<span class="user">{escape(user)}</span> <form method="post" action="/logout">'
            f'{_token_field(form_token)}<button type="submit">Log out</button></form>')


def _page(title: str, body: str, user: str = "", form_token: str = "") -> str:
    return _TEMPLATES["base"].substitute(title=escape(title), style=f"{STYLE_PATH}?v={STYLE_TAG}", body=body, root="/",
                                         who=_who(user, form_token))


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


FACET_NAMES = {"beamline": "Beamline", "data_type": "Data type", "year": "Year", "access": "Access"}
SORT_NAMES = {"newest": "newest first", "title": "title"}
SEARCH_FIELDS = ("q", "beamtime", "proposal", "pi", "from", "to")


def index_url(form: dict[str, str], **changes: str) -> str:
    """The front page for `form` (the query as typed, facet filters, sort) with `changes` applied
    (an empty value drops that parameter); "sort=newest" is the default and left out."""
    params = {**form, **changes}
    kept = {k: v for k, v in params.items() if v and not (k == "sort" and v == "newest")}
    return "/?" + urlencode(kept) if kept else "/"


def _facets(facets: dict[str, dict[str, int]], form: dict[str, str]) -> str:
    """Each facet's values as links that narrow the search to that value (the chosen one marked)."""
    parts = []
    for name, title in FACET_NAMES.items():
        counts = facets.get(name) or {}
        if counts:
            items = []
            for value, n in counts.items():
                text = escape(str(value))
                if form.get(name) and form[name].casefold() == str(value).casefold():
                    items.append(f'<li class="chosen" aria-current="true">{text} <span>{n}</span></li>')
                else:
                    href = escape(index_url(form, **{name: str(value)}))
                    items.append(f'<li><a href="{href}" data-facet="{name}">{text}</a> <span>{n}</span></li>')
            parts.append(f"<h3>{escape(title)}</h3><ul>{''.join(items)}</ul>")
    return "\n".join(parts)


def _active(form: dict[str, str]) -> str:
    """The facet filters in force, each with a link that removes it."""
    chips = [f'<li>{escape(FACET_NAMES[name])}: {escape(form[name])} '
             f'<a href="{escape(index_url(form, **{name: ""}))}" class="remove" '
             f'aria-label="remove filter {escape(FACET_NAMES[name])}">×</a></li>'
             for name in FILTERS if form.get(name)]
    if not chips:
        return ""
    clear = escape(index_url(form, **{name: "" for name in FILTERS}))
    return f'<ul class="active" aria-label="Filters">{"".join(chips)}<li><a href="{clear}">remove all</a></li></ul>'


def _sorts(form: dict[str, str]) -> str:
    chosen = form.get("sort") or "newest"
    return "".join(f'<option value="{s}"{" selected" if s == chosen else ""}>{escape(SORT_NAMES[s])}</option>'
                   for s in SORTS)


def render_index(datasets: list[Dataset], form: dict[str, str], now: float, *, total: int,
                 facets: dict[str, dict[str, int]], next_cursor: str | None, user: str = "",
                 form_token: str = "") -> str:
    """The dataset list with its search form, facet links, the filters in force and the sort;
    `form` holds the query as typed (SEARCH_FIELDS), the facet filters (FILTERS) and `sort`."""
    rows = "\n".join(_dataset_row(ds, now) for ds in datasets) or \
        '    <tr><td colspan="8">No dataset matches; clear the search or check the spelling.</td></tr>'
    count = f"{total} dataset{'s' if total != 1 else ''}"
    if total > len(datasets):
        count += f", showing {len(datasets)}"
    more = ""
    if next_cursor:
        more = f'<a href="{escape(index_url(form, cursor=next_cursor))}">next page</a>'
    hidden = "".join(f'<input type="hidden" name="{name}" value="{escape(form[name], quote=True)}">'
                     for name in FILTERS if form.get(name))
    body = _TEMPLATES["index"].substitute(
        root="/", rows=rows, count=escape(count), facets=_facets(facets, form), more=more, active=_active(form),
        hidden=hidden, sorts=_sorts(form),
        **{k: escape(form.get(k, "") or "", quote=True) for k in SEARCH_FIELDS})
    return _page("Datasets", body, user, form_token)


def _replica_badges(f: FileRecord) -> str:
    return "".join(f'<span class="badge {escape(r.state)}" title="{escape(r.state)}">{escape(tier)}</span>'
                   for tier, r in sorted(f.replicas.items())) or '<span class="badge">none</span>'


def _file_item(ds: Dataset, f: FileRecord, available: bool) -> str:
    name = escape(posixpath.basename(f.path))
    if available:
        link = f'<a href="{escape(content_path(ds.pid, f.path))}" download>download</a>'
    else:
        link = '<span class="badge failed">no verified copy online</span>'
    box = f'<input type="checkbox" name="path" value="{escape(f.path, quote=True)}" aria-label="select {name}">'
    return (f'<li>{box}<span class="name">{name}</span><span class="num">{human_size(f.size)}</span>'
            f"<code>{escape(f.adler32 or '—')}</code>{_replica_badges(f)}{link}</li>")


def folder_tree(paths: list[str]) -> dict:
    """{'dirs': {name: subtree}, 'files': [index, ...]} of '/'-separated paths, by position."""
    root: dict = {"dirs": {}, "files": []}
    for i, path in enumerate(paths):
        node = root
        for part in path.split("/")[:-1]:
            node = node["dirs"].setdefault(part, {"dirs": {}, "files": []})
        node["files"].append(i)
    return root


def _count(node: dict) -> int:
    return len(node["files"]) + sum(_count(d) for d in node["dirs"].values())


def _tree_html(node: dict, items: list[str], depth: int = 0, where: str = "") -> str:
    """`where`: " on this page" when the dataset's files span several pages (a folder's count is
    then what this page holds of it, not the folder's total)."""
    out = []
    for name in sorted(node["dirs"]):
        sub = node["dirs"][name]
        inner = _tree_html(sub, items, depth + 1, where)
        n = _count(sub)
        out.append(f'<details{" open" if depth == 0 else ""}><summary>{escape(name)}/ '
                   f'<span class="count">({n} file{"s" if n != 1 else ""}{where})</span></summary>{inner}</details>')
    if node["files"]:
        out.append("<ul>" + "".join(items[i] for i in node["files"]) + "</ul>")
    return "\n".join(out)


def render_tree(ds: Dataset, files: list[tuple[FileRecord, bool]], paged: bool = False) -> str:
    if not files:
        return "<p>This dataset has no files yet.</p>"
    items = [_file_item(ds, f, ok) for f, ok in files]
    return _tree_html(folder_tree([f.path for f, _ in files]), items, where=" on this page" if paged else "")


def _flat(value, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        rows = []
        for k in sorted(value, key=str):
            rows += _flat(value[k], f"{prefix}.{k}" if prefix else str(k))
        return rows
    if isinstance(value, list):
        if all(not isinstance(v, (dict, list)) for v in value):
            return [(prefix, ", ".join(str(v) for v in value))]
        rows = []
        for i, v in enumerate(value):
            rows += _flat(v, f"{prefix}[{i}]")
        return rows
    return [(prefix, "" if value is None else str(value))]


def _metadata_block(ds: Dataset) -> str:
    """The metadata as a readable table (nested keys joined with '.'), raw JSON behind a toggle."""
    if not ds.metadata:
        return ""
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in _flat(ds.metadata))
    text = json.dumps(ds.metadata, indent=2, sort_keys=True, ensure_ascii=False)
    return (f'<h2>Metadata</h2>\n<div class="scroll"><table class="meta"><tbody>{rows}</tbody></table></div>\n'
            f"<details><summary>raw JSON</summary><pre><code>{escape(text)}</code></pre></details>")


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


def _manifest_tools(ds: Dataset) -> str:
    """The selection's buttons; left out for a dataset with no files (an empty manifest is one
    that `domas get --manifest` refuses)."""
    url = escape(manifest_path(ds.pid))
    return ('<p class="tools"><button type="submit" name="selected" value="1">Manifest of the selected files</button>\n'
            f'<a href="{url}">manifest of every file</a> · then <code>domas get --manifest FILE DEST</code></p>')


def render_dataset(ds: Dataset, files: list[tuple[FileRecord, bool]], *, now: float, server: str, offset: int,
                   limit: int, more: bool, people: dict[str, str], state: str, user: str = "",
                   form_token: str = "") -> str:
    """One dataset: facts (with proposal, PI and team), metadata table and a folder tree of a page
    of files; `files` pairs each with 'a verified copy serves it'."""
    notice = ""
    if ds.embargo_end is not None and ds.embargo_end > now:
        notice = (f'<p class="notice">Under embargo until {escape(utc(ds.embargo_end)[:10])}: visible to its team '
                  "and facility staff only.</p>")
    body = _TEMPLATES["dataset"].substitute(
        root="/", pid=escape(ds.pid), heading=escape(title_of(ds)), notice=notice,
        proposal=escape(people.get("proposal") or "—"), pi=escape(people.get("pi") or "—"),
        team=escape(people.get("team") or "—"),
        beamtime=escape(ds.beamtime + (f" ({people['beamline']})" if people.get("beamline") else "")),
        path=escape(ds.path), data_type=escape(ds.data_type),
        state=escape(state), file_count=str(ds.file_count), size=human_size(ds.bytes),
        created=escape(utc(ds.created_at)), server=escape(server), metadata=_metadata_block(ds),
        tree=render_tree(ds, files, paged=offset > 0 or more), tools=_manifest_tools(ds) if files or offset else "",
        manifest_url=escape(manifest_path(ds.pid)),
        pager=_pager(ds, offset, limit, len(files), more))
    return _page(title_of(ds), body, user, form_token)


def render_manifest(ds: Dataset, server: str, paths: list[str]) -> str:
    """A download manifest: one content URL per line, for `domas get --manifest FILE DEST`."""
    head = [f"# domas manifest: {len(paths)} file(s) of dataset {ds.pid} ({title_of(ds)})".replace("\n", " "),
            "# download with: domas get --manifest THIS_FILE DEST   (add --token or DOMAS_TOKEN if needed)"]
    return "\n".join(head + [server + content_path(ds.pid, p) for p in paths]) + "\n"


def render_login(message: str = "", user: str = "", form_token: str = "", next_path: str = "/") -> str:
    """The login form; after logging in the browser goes to `next_path` (checked again when posted)."""
    notice = f'<p class="notice bad">{escape(message)}</p>' if message else ""
    fields = _token_field(form_token) + f'<input type="hidden" name="next" value="{escape(next_path, quote=True)}">'
    body = _TEMPLATES["login"].substitute(root="/", notice=notice, token_field=fields)
    return _page("Log in", body, user, form_token)


def render_error(heading: str, message: str, user: str = "", form_token: str = "") -> str:
    body = _TEMPLATES["error"].substitute(root="/", heading=escape(heading), message=escape(message))
    return _page(heading, body, user, form_token)
