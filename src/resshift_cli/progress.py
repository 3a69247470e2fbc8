"""Progress reports from library code to whoever draws them (the CLI); the library never draws itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """`done` of `total` in `stage`.

    Stages of one image (pipeline): "encode"/"decode" (autoencoder tiles), "denoise" ((step, tile) pairs)
    or "tiles" (official chop patches). Stages of a model fetch: "download" (bytes of the file named in
    `detail`; `total` 0 when the server did not say) and "wait" (another process holds the lock; `detail`
    says what it is doing, done = total = 0).
    """

    stage: str
    done: int
    total: int
    detail: str = ""


ProgressCallback = Callable[[Progress], None]

DOWNLOAD = "download"
WAIT = "wait"


def report(progress: ProgressCallback | None, stage: str, done: int, total: int, detail: str = "") -> None:
    """Call `progress` when there is one."""
    if progress is not None:
        progress(Progress(stage, done, total, detail))
