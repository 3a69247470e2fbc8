"""Drawing the library's model-fetch reports on stderr: byte bars per file, and lock-waiting notes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as Bars

from resshift_cli.progress import DOWNLOAD, WAIT, Progress, ProgressCallback


class DownloadBars:
    """A rich bar per downloaded file (started on the first byte report) and a line per lock wait."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
        self.bars = Bars(*columns, TimeRemainingColumn(), console=self.console)
        self._tasks: dict[str, TaskID] = {}
        self._started = False

    def __call__(self, progress: Progress) -> None:
        if progress.stage == WAIT:
            self.console.print(f"waiting for another resshift process {progress.detail} …")
        elif progress.stage == DOWNLOAD:
            self._update(progress)

    def _update(self, progress: Progress) -> None:
        if not self._started:
            self.bars.start()
            self._started = True
        total = progress.total or None
        task = self._tasks.get(progress.detail)
        if task is None:
            task = self._tasks[progress.detail] = self.bars.add_task(progress.detail, total=total)
        self.bars.update(task, completed=progress.done, total=total)

    def close(self) -> None:
        if self._started:
            self.bars.stop()
            self._started = False


@contextmanager
def download_progress(enabled: bool) -> Iterator[ProgressCallback | None]:
    """A callback drawing model-fetch progress on stderr while the block runs; None when not `enabled`."""
    if not enabled:
        yield None
        return
    bars = DownloadBars()
    try:
        yield bars
    finally:
        bars.close()
