"""`resshift batch` locally and with `--ray` (1 and 2 workers) on the same folder, side by side.

Each mode runs as its own `resshift batch ... --json` process over the same N LR images (seeded, 256×256 by
default). Records are timestamped as they arrive on stdout, so besides the wall time of the whole command
(start-up, model load and Ray start included) the table shows the steady state: seconds between the first
and the last record / (N − 1), i.e. the cost per image once everything runs. The Ray overhead per image is
that steady-state figure of `--ray --workers 1` against the local batch. The outputs of every mode are
checked to be byte-identical to the local batch's.

    python benchmarks/ray_batch.py                                  # lite, 6 images of 256², cpu
    python benchmarks/ray_batch.py --model tests-tiny-folder --images 8 --size 256 --workers 1,2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Timing:
    """One mode's run: wall seconds of the command, record arrival times (s from start), status counts."""

    mode: str
    wall: float
    arrivals: list[float]
    failed: int

    @property
    def steady(self) -> float:
        """Seconds per image between the first and the last record (NaN with fewer than 2 images)."""
        if len(self.arrivals) < 2:
            return float("nan")
        return (self.arrivals[-1] - self.arrivals[0]) / (len(self.arrivals) - 1)


def make_images(folder: Path, count: int, size: int, seed: int = 0) -> None:
    """`count` RGB PNGs of size × size: smooth gradients plus seeded noise (something to upscale)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size)
    for index in range(count):
        base = np.stack([np.outer(ramp, ramp), np.outer(ramp[::-1], ramp), np.outer(ramp, ramp[::-1])], -1)
        pixels = np.clip(base * 200 + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{index:03d}.png")


def run_mode(mode: str, extra: list[str], inputs: Path, out: Path, common: list[str]) -> Timing:
    """Run one `resshift batch` and timestamp each JSON record as it arrives."""
    command = [sys.executable, "-m", "resshift_cli", "batch", str(inputs), "-o", str(out), "--json", "-q"]
    started = time.perf_counter()
    process = subprocess.Popen([*command, *common, *extra], stdout=subprocess.PIPE, text=True)
    arrivals, failed = [], 0
    assert process.stdout is not None
    for line in process.stdout:
        arrivals.append(time.perf_counter() - started)
        failed += json.loads(line)["status"] == "failed"
    process.wait()
    return Timing(mode, time.perf_counter() - started, arrivals, failed + (process.returncode != 0))


def same_files(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names
    )


def table(timings: list[Timing], outputs: dict[str, Path], count: int) -> str:
    local = timings[0]
    rows = [
        "| mode | wall s | steady s/image | images/h (steady) | vs local per image | identical | failed |",
        "|---|---|---|---|---|---|---|",
    ]
    for timing in timings:
        ratio = timing.steady / local.steady - 1
        rows.append(
            f"| {timing.mode} | {timing.wall:.1f} | {timing.steady:.2f} | {3600 / timing.steady:.0f}"
            f" | {ratio:+.1%} | {same_files(outputs[timing.mode], outputs[local.mode])} | {timing.failed} |"
        )
    return "\n".join(rows) + f"\n\n{count} images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lite", help="registry name or model folder (default: lite)")
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--size", type=int, default=256, help="LR side in pixels")
    parser.add_argument("--workers", default="1,2", help="comma-separated --workers for the Ray runs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    common = ["-m", args.model, "--device", args.device, "--precision", args.precision]
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        make_images(root / "in", args.images, args.size)
        modes = [("local", [])] + [
            (f"ray, {n} worker{'s' * (n != '1')}", ["--ray", "--workers", n]) for n in args.workers.split(",")
        ]
        outputs = {mode: root / f"out{index}" for index, (mode, _) in enumerate(modes)}
        timings = [run_mode(mode, extra, root / "in", outputs[mode], common) for mode, extra in modes]
        print(table(timings, outputs, args.images))


if __name__ == "__main__":
    main()
