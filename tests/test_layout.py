"""The layout shows the architecture: every module's imports follow the rooms.

Rooms (README "Code map"): the entry points (`domas`, `domas up`) may import anything; services
(agent, controller, archive, dataservice) import only themselves, the shared libraries and the
base; shared libraries (transfer, catalogue) import only themselves and the base; the base
(`domas` root modules, the checksum extension, the generated wire contract) imports only the base.
No module but a CLI imports a CLI module; no function-local import hides a cycle; nothing at the
repository root shadows the installed package. Reads source files only: no imports, no fixtures.
"""

from __future__ import annotations

import ast
import functools
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

ENTRY = {"domas.cli", "domas.cli_up"}
BASE = ("domas", "domas.checksum", "domas.v1")
SHARED = ("domas.transfer", "domas.catalogue")
SERVICES = ("domas.agent", "domas.controller", "domas.archive", "domas.dataservice")
# Pure cores (no I/O, `now` passed in) and the pure modules they are made of. They import only each
# other and the pure base, and no module that reaches disks, sockets, threads or event loops.
PURE = ("domas.transfer.plan", "domas.transfer.parts", "domas.transfer.filecore", "domas.transfer.validate",
        "domas.controller.scheduler", "domas.controller.events", "domas.controller.records", "domas.controller.restore",
        "domas.controller.breaker", "domas.controller.fairshare", "domas.controller.endpoints",
        "domas.archive.lifecycle", "domas.dataservice.delivery", "domas.dataservice.access",
        "domas.catalogue.reconcile", "domas.catalogue.search", "domas.catalogue.base")
PURE_BASE = ("domas.errors", "domas.checksum", "domas.retry", "domas.v1.domas_pb2", "domas.transfer.paths")
IO_MODULES = {"socket", "sqlite3", "subprocess", "threading", "asyncio", "grpc", "pymongo", "fastapi", "starlette",
              "httpx", "XRootD", "aio_pika", "shutil", "tempfile", "urllib.request", "http.client", "uvloop"}


def package_dirs() -> dict[str, Path]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {pkg: ROOT / d for pkg, d in cfg["package-dir"].items()}


def modules() -> dict[str, Path]:
    dirs = package_dirs()
    out = {}
    for pkg, d in dirs.items():
        for f in d.glob("*.py"):
            out[pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"] = f
    return out


MODULES = modules()


def room(module: str) -> str:
    if module in ENTRY:
        return "entry"
    for r in sorted(SERVICES + SHARED + BASE[1:], key=len, reverse=True):
        if module == r or module.startswith(r + "."):
            return r
    return "domas"


def layer(r: str) -> int:
    return 3 if r == "entry" else 2 if r in SERVICES else 1 if r in SHARED else 0


def type_checking_only(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


@functools.cache
def imports(module: str) -> tuple[tuple[str, bool, int], ...]:
    """(imported module, inside a function?, line) for every domas import of `module`."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or type_checking_only(node, parents):
            continue
        local, p = False, node
        while p in parents:
            p = parents[p]
            if isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef)):
                local = True
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            if node.level:
                base = module.split(".")[:None if is_pkg else -1]
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]
        for n in names:
            if n == "domas" or n.startswith("domas."):
                while n not in MODULES and "." in n:
                    n = n.rpartition(".")[0]
                out.append((n, local, node.lineno))
    return tuple(out)


def test_every_package_is_in_a_room():
    assert set(package_dirs()) >= {"domas", *SHARED, *SERVICES, "domas.checksum", "domas.v1"}
    lost = [m for m in MODULES if room(m) == "domas" and m.count(".") > 1]
    assert not lost, f"modules outside every room: {lost}"


def test_imports_follow_the_rooms():
    bad = []
    for m in MODULES:
        mine = room(m)
        for target, _, line in imports(m):
            theirs = room(target)
            if mine == "entry" or theirs == mine:
                continue
            if layer(theirs) > layer(mine) or (layer(theirs) == layer(mine) > 0):
                bad.append(f"{m}:{line} imports {target} ({mine} -> {theirs})")
    assert not bad, "imports against the rooms:\n" + "\n".join(bad)


def test_only_entry_points_and_clis_import_a_cli():
    bad = [f"{m}:{line} imports {t}" for m in MODULES if m not in ENTRY and not m.rpartition(".")[2].startswith("cli")
           for t, _, line in imports(m) if t.rpartition(".")[2].startswith("cli")]
    assert not bad, "\n".join(bad)


def reaches(start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m == goal:
            return True
        if m in seen or m not in MODULES:
            continue
        seen.add(m)
        todo += [t for t, local, _ in imports(m) if not local]
    return False


def test_no_function_local_import_hides_a_cycle():
    bad = [f"{m}:{line} imports {t} inside a function: {t} imports {m} back"
           for m in MODULES for t, local, line in imports(m) if local and t != m and reaches(t, m)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", PURE)
def test_pure_cores_do_no_io(module):
    tree = ast.parse(MODULES[module].read_text())
    used = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    used |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    io = sorted(u for u in used if u.split(".")[0] in IO_MODULES or u in IO_MODULES)
    shells = sorted({t for t, _, _ in imports(module) if t not in PURE + PURE_BASE})
    assert not io, f"{module} imports {io}"
    assert not shells, f"{module} imports modules that are not pure: {shells}"


def test_nothing_at_the_root_shadows_the_package():
    assert not (ROOT / "domas").exists() and not (ROOT / "domas.py").exists()
    assert package_dirs()["domas"] == ROOT / "src" / "domas"
