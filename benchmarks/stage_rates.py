"""Measure the throughput (GFLOP/s per thread) of each pipeline stage per CPU class and precision.

For each `--cpu-class` a worker process (capped like `bench.py --cpu-class`) builds random weights of the
model's full-size architecture, holds them in each precision as the runtime does (`runner.Runtime`), and
times single-threaded, in CPU seconds, one call of: the encoder (+ quant_conv) on a `--window`² latent
window, the decoder (+ post_quant_conv), one UNet call, and the autoencoder's global attention alone
(scaled dot-product attention over `--window`² positions of 512 channels). FLOPs come from
`resshift_cli.cost`, so each row is the rate the cost model should use (`cost.RATES`):

    python benchmarks/stage_rates.py --cpu-class native,avx2 --precisions fp32,bf16,fp32+winograd

"fp32+winograd" is float32 with the 3×3 convolutions through Winograd's transform (`nets.winograd`), what
`--precision auto` runs the autoencoder in on CPUs (rates count the convolutions' direct FLOPs).

A shared machine disturbs wall time more than CPU time; the table is CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from resshift_cli import cost, devices
from resshift_cli.devices import DTYPES, autocast, memory_format
from resshift_cli.nets import winograd
from resshift_cli.runner import Runtime

sys.path.insert(0, os.path.dirname(__file__))
from bench import CLASS_CAPS, class_environment, random_model, verify_cpu_class

WINOGRAD_SUFFIX = "+winograd"


def cpu_seconds(fn: Callable[[], object], repeat: int) -> float:
    """The least CPU time of `repeat` calls of `fn` (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best


def stage_rates(model_name: str, precision: str, window: int, repeat: int) -> dict[str, float]:
    """GFLOP/s of each stage in one precision: encoder, decoder, unet (conv FLOPs + their attention), and
    the global attention alone."""
    dtype = DTYPES[precision.removesuffix(WINOGRAD_SUFFIX)]
    device = torch.device("cpu")
    runtime = Runtime(random_model(model_name))
    fmt = memory_format(device, dtype)
    runtime.prepare(dtype, fmt)
    ae, config = runtime.autoencoder, runtime.config
    dd, embed = config.autoencoder.ddconfig, config.autoencoder.embed_dim
    factor = ae.factor
    image = torch.rand(1, 3, factor * window, factor * window).contiguous(memory_format=fmt)
    latent = torch.randn(1, embed, window, window).contiguous(memory_format=fmt)
    lq = torch.rand(1, 3, window, window).contiguous(memory_format=fmt)
    channels = dd.ch * dd.ch_mult[-1]
    q = torch.randn(1, 1, window * window, channels, dtype=dtype)
    t = torch.tensor([1])
    jobs = {
        "encoder": (
            lambda: ae.encode(image),
            cost.encoder_flops(dd, embed, factor * window, factor * window),
        ),
        "decoder": (
            lambda: ae.decode_without_quantization(latent),
            cost.decoder_flops(dd, embed, window, window),
        ),
        "unet": (lambda: runtime.denoise(latent, t, lq), cost.unet_flops(config.unet, window, window)),
        "attention": (
            lambda: F.scaled_dot_product_attention(q, q, q),
            cost.Flops(attention=4.0 * (window * window) ** 2 * channels),
        ),
    }
    rates = {}
    fast = winograd.enabled(precision.endswith(WINOGRAD_SUFFIX))
    with torch.inference_mode(), autocast(device, dtype), fast:
        for name, (fn, flops) in jobs.items():
            rates[name] = flops.total / cpu_seconds(fn, repeat) / 1e9
    return rates


def worker(args: argparse.Namespace) -> None:
    verify_cpu_class(args.worker)
    torch.set_num_threads(1)
    rows = [
        {"class": devices.cpu_class(), "precision": p} | stage_rates(args.model, p, args.window, args.repeat)
        for p in args.precisions
    ]
    print(json.dumps(rows))


def run_class(cpu_class: str, argv: Sequence[str]) -> list[dict[str, object]]:
    command = [sys.executable, __file__, *argv, "--worker", cpu_class]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
        env=class_environment(cpu_class, dict(os.environ)),
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="realsr-v3", help="registry name (random full-size weights)")
    p.add_argument("--cpu-class", default="native", help=f"comma-separated: {', '.join(CLASS_CAPS)}")
    p.add_argument(
        "--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16, fp16, fp32+winograd"
    )
    p.add_argument("--window", type=int, default=64, help="latent window side (default 64)")
    p.add_argument("--repeat", type=int, default=2, help="timed calls per stage; the least is kept")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.precisions = args.precisions.split(",")
    if args.worker:
        worker(args)
        return 0
    forwarded = ["--model", args.model, "--precisions", ",".join(args.precisions)]
    forwarded += ["--window", str(args.window), "--repeat", str(args.repeat)]
    print("class        precision  encoder  decoder     unet  attention   (GFLOP/s, one thread, CPU time)")
    for cpu_class in args.cpu_class.split(","):
        for row in run_class(cpu_class, forwarded):
            rates = " ".join(f"{row[k]:8.1f}" for k in ("encoder", "decoder", "unet", "attention"))
            print(f"{row['class']:<12} {row['precision']:<9} {rates}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
