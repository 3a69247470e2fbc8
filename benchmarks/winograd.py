"""Time the 3×3 convolutions of the realsr networks three ways: oneDNN's direct float32, Winograd through
NNPACK (`resshift_cli.nets.winograd.convolve`, in bands of rows) and oneDNN's bfloat16 with channels-last.

One thread, least of `--repeat` calls, GFLOP/s counted as direct convolutions (2·9·C_in·C_out per output),
so Winograd's rate is an effective one. The relative error is against the direct float32 result. Each
`--cpu-class` runs in a worker capped like `bench.py --cpu-class` (NNPACK has its own AVX2 kernels and
ignores the caps; oneDNN's rates change with them):

    python benchmarks/winograd.py --cpu-class native,avx2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from resshift_cli.devices import cpu_class, cpu_has_native_bf16
from resshift_cli.nets import winograd

sys.path.insert(0, os.path.dirname(__file__))
from bench import class_environment, verify_cpu_class

SHAPES = (
    (3, 128, 256),  # autoencoder: encoder input, full-resolution levels (288 = a 72-pixel latent tile)
    (128, 128, 288),
    (128, 256, 144),
    (256, 256, 144),
    (512, 512, 72),
    (128, 3, 288),  # decoder output
    (160, 160, 256),  # denoiser levels on a 256² latent
    (320, 320, 128),
    (320, 320, 64),
    (640, 640, 32),
)
"""(C_in, C_out, side) of the layers timed."""


def seconds(fn: Callable[[], torch.Tensor], repeat: int) -> tuple[float, torch.Tensor]:
    """Least wall time of `repeat` calls (after a warm-up call) and the last result."""
    out = fn()
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
    return best, out


def row(c_in: int, c_out: int, side: int, repeat: int) -> str:
    """One table row: rates of the direct float32, Winograd and bfloat16 convolutions, and the error."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, c_in, side, side, generator=generator)
    w = torch.randn(c_out, c_in, 3, 3, generator=generator) / (3 * c_in**0.5)
    b = torch.randn(c_out, generator=generator)
    gflop = 2 * 9 * c_in * c_out * side * side / 1e9
    direct_s, direct = seconds(lambda: F.conv2d(x, w, b, padding=1), repeat)
    fast_s, fast = seconds(lambda: winograd.convolve(x, w, b, (1, 1)), repeat)
    cells = [f"{c_in:5d} {c_out:5d} {side:4d}", f"{gflop / direct_s:8.0f}", f"{gflop / fast_s:9.0f}"]
    if cpu_has_native_bf16():
        fmt = torch.channels_last
        xb, wb = x.bfloat16().contiguous(memory_format=fmt), w.bfloat16().contiguous(memory_format=fmt)
        bf16_s, _ = seconds(lambda: F.conv2d(xb, wb, b.bfloat16(), padding=1), repeat)
        cells.append(f"{gflop / bf16_s:9.0f}")
    else:
        cells.append(f"{'-':>9}")
    error = ((fast - direct).norm() / direct.norm()).item()
    return "  ".join([*cells, f"{error:9.1e}"])


def worker(requested: str, repeat: int) -> None:
    verify_cpu_class(requested)
    torch.set_num_threads(1)
    if not winograd.available():
        print(f"{cpu_class()}: this PyTorch has no NNPACK here")
        return
    print(f"class {cpu_class()}: GFLOP/s, one thread")
    print("C_in  C_out side  fp32 dir  winograd  bf16 dir  rel error")
    for shape in SHAPES:
        print(row(*shape, repeat), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-class", default="native", help="comma-separated: native, avx512-bf16, avx2, …")
    p.add_argument("--repeat", type=int, default=3, help="timed calls per layer; the least is kept")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.repeat)
        return 0
    for requested in args.cpu_class.split(","):
        command = [sys.executable, __file__, "--repeat", str(args.repeat), "--worker", requested]
        env = class_environment(requested, dict(os.environ))
        subprocess.run(command, check=True, env=env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
