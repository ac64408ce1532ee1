"""How a copy shows itself: a live rich display on a terminal, plain log lines otherwise.

Reporters only read the Accounting object; the copy path calls the few hooks below.
"""

from __future__ import annotations

import sys
import threading

from .accounting import Accounting, FileStats


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def file_label(fs: FileStats, number: int | None = None, width: int = 48) -> str:
    """What a progress line calls a file: its local path's end (the real file name and the folders
    above it as far as they fit), never a URL's last segment (which is `content` for downloads)."""
    path = fs.destination.split("://", 1)[-1]
    text = path if len(path) <= width else "…" + path[-(width - 1):]
    return f"{number:>4}  {text}" if number is not None else text


def binary_rate(bytes_per_second: float | None) -> str:
    """A rate in the same binary units as the sizes beside it (KiB/s, MiB/s), never MB/s."""
    return "?" if bytes_per_second is None else human_bytes(bytes_per_second) + "/s"


class NullReporter:
    def start(self, acct: Accounting) -> None: ...
    def file_started(self, fs: FileStats) -> None: ...
    def file_done(self, fs: FileStats) -> None: ...
    def file_failed(self, fs: FileStats) -> None: ...
    def note(self, message: str) -> None: ...
    def stop(self) -> None: ...


def shown(name: str) -> str:
    """A file name for a one-line report: as it is, or quoted like repr() when it holds a character
    that is not printable (a newline would split the line, a tab or escape would garble it)."""
    return name if name.isprintable() else repr(name)


class PlainReporter(NullReporter):
    """One line per finished file and per notable event, for logs and pipes."""

    def __init__(self, stream=None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self._lock = threading.Lock()

    def _say(self, line: str) -> None:
        with self._lock:
            print(line, file=self.stream, flush=True)

    def file_done(self, fs: FileStats) -> None:
        if self.quiet:
            return
        if fs.status == "skipped":
            self._say(f"up to date  {shown(fs.destination)}")
            return
        rate = fs.size / fs.seconds if fs.seconds > 0 else 0
        self._say(f"copied  {shown(fs.source)} -> {shown(fs.destination)}  {human_bytes(fs.size)}"
                  f"  adler32 {fs.adler32}  {binary_rate(rate)}" + (f"  retries {fs.retries}" if fs.retries else ""))

    def file_failed(self, fs: FileStats) -> None:
        self._say(f"FAILED  {shown(fs.source)}: {fs.error}")

    def note(self, message: str) -> None:
        if not self.quiet:
            self._say(message)


class RichReporter(PlainReporter):
    """A live display: one bar per file in flight and one for the total (bytes, rate, ETA)."""

    def __init__(self, stream=None) -> None:
        super().__init__(stream)
        from rich.console import Console
        from rich.markup import escape
        from rich.progress import BarColumn, DownloadColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
        from rich.text import Text

        self._esc = escape          # names are shown as they are: '[red]x.h5' is no markup, 'a[/x].h5' no error

        class BinarySpeed(ProgressColumn):
            def render(self, task) -> Text:
                return Text(binary_rate(task.finished_speed or task.speed), style="progress.data.speed")

        self.console = Console(file=self.stream)
        # speed_estimate_period: a rate averaged over 10 s, so whole-chunk steps do not make it jump
        self.progress = Progress(TextColumn("{task.description}", justify="left"), BarColumn(),
                                 DownloadColumn(binary_units=True), BinarySpeed(), TimeRemainingColumn(),
                                 console=self.console, refresh_per_second=8, transient=False,
                                 speed_estimate_period=10.0)
        self._numbers = 0
        self._tasks: dict[int, int] = {}
        self._total = None
        self._timer: threading.Timer | None = None
        self._running = False

    def start(self, acct: Accounting) -> None:
        self.acct = acct
        self.progress.start()
        self._total = self.progress.add_task("[bold]total", total=None)
        self._running = True
        self._tick()

    def _tick(self) -> None:
        if not self._running:
            return
        files = self.acct.files_now()
        self.progress.update(self._total, completed=sum(f.done_bytes for f in files),
                             total=sum(f.size for f in files) or None)
        for fs in files:
            tid = self._tasks.get(id(fs))
            if tid is not None:
                self.progress.update(tid, completed=fs.done_bytes, total=fs.size or 1)
        self._timer = threading.Timer(0.25, self._tick)
        self._timer.daemon = True
        self._timer.start()

    def file_started(self, fs: FileStats) -> None:
        self._numbers += 1
        self._tasks[id(fs)] = self.progress.add_task(self._esc(file_label(fs, self._numbers)), total=fs.size or 1)

    def _finish(self, fs: FileStats) -> None:
        tid = self._tasks.pop(id(fs), None)
        if tid is not None:
            self.progress.remove_task(tid)

    def file_done(self, fs: FileStats) -> None:
        self._finish(fs)
        if fs.status == "skipped":
            self.progress.console.print(f"[dim]up to date[/] {self._esc(fs.destination)}")
        elif fs.status == "done":
            self.progress.console.print(f"[green]copied[/] {self._esc(fs.destination)}  {human_bytes(fs.size)}  "
                                        f"adler32 {fs.adler32}")

    def file_failed(self, fs: FileStats) -> None:
        self._finish(fs)
        self.progress.console.print(f"[red]FAILED[/] {self._esc(f'{fs.source}: {fs.error}')}")

    def note(self, message: str) -> None:
        self.progress.console.print(message, markup=False, highlight=False)

    def stop(self) -> None:
        self._running = False
        if self._timer:
            self._timer.cancel()
        if getattr(self, "acct", None) is not None and self._total is not None:
            self.progress.update(self._total, completed=self.acct.done_bytes, total=self.acct.total_bytes or 1)
        self.progress.stop()


def make_reporter(quiet: bool, json_mode: bool, stream=None):
    stream = stream or sys.stderr
    if stream.isatty() and not quiet:
        return RichReporter(stream)
    return PlainReporter(stream, quiet=quiet)
