"""Choose the `lite` preset's widths: size, training-step time and inference speed of candidate denoisers.

Every candidate is the `lite` preset (space-to-depth ×4, 48-channel latent at LR size, realsr-v3's 4-step
chain) with other UNet widths. For each it prints the parameters, the float16 model folder's size (the
wheel budget is 20 MB), the time of one training step (forward + backward + AdamW on a batch of LR crops,
the latent and LR conditioning the trainer feeds; data loading and degradation not included) in float32
and under bf16 autocast, the iterations that fit in 90 minutes, and seconds per output megapixel of the
real pipeline (`upscale_tensor`, untiled, `--precision` as given) against realsr-v3's full-size
architecture with random weights (`bench.random_model`).

    python benchmarks/lite_arch.py                        # every candidate, batch 8 of 64×64 LR crops
    python benchmarks/lite_arch.py --candidates c64-1222 --train-steps 5 --reference none

Times are CPU seconds of this process (`time.process_time`), which other processes on a shared machine
disturb far less than wall-clock time; run with `--threads 1` (the default here) so that CPU time is the
time one core needs. Single runs are still noisy: compare rows measured together, repeat a close call.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from bench import random_model, test_image
from resshift_cli import presets
from resshift_cli.config import ModelConfig, UNetConfig
from resshift_cli.devices import resolve_precision
from resshift_cli.loading import LoadedModel, write_model_folder
from resshift_cli.pipeline import UpscaleOptions
from resshift_cli.runner import Runtime, upscale_tensor

BUDGET_MINUTES = 90
WHEEL_BUDGET_MB = 20.0
SEED = 0

CANDIDATES: dict[str, UNetConfig] = {
    name: dataclasses.replace(presets.LITE_UNET, **widths)
    for name, widths in {
        "c32-1224-r2": {"model_channels": 32, "channel_mult": (1, 2, 2, 4), "num_res_blocks": (2, 2, 2, 2)},
        "c32-1224-r1": {"model_channels": 32, "channel_mult": (1, 2, 2, 4), "num_res_blocks": (1, 1, 1, 1)},
        "c64-1222-r1": {"model_channels": 64, "channel_mult": (1, 2, 2, 2), "num_res_blocks": (1, 1, 1, 1)},
        "c64-1222-r1-a64": {
            "model_channels": 64,
            "channel_mult": (1, 2, 2, 2),
            "num_res_blocks": (1, 1, 1, 1),
            "attention_resolutions": (64, 32, 16, 8),
        },
    }.items()
}
"""Name → UNet: c{model_channels}-{channel_mult}-r{num_res_blocks}; "-a64" adds Swin at the LR-size level."""


@dataclass
class Row:
    """One candidate's measurements; `None` where a value was not measured."""

    name: str
    parameters_m: float
    fp16_mb: float
    train_fp32_s: float | None
    train_bf16_s: float | None
    infer_s_per_mp: float | None
    speedup: float | None = None

    def iterations(self) -> int | None:
        """Training iterations in `BUDGET_MINUTES` at the faster of the two step times."""
        times = [t for t in (self.train_fp32_s, self.train_bf16_s) if t is not None]
        return int(BUDGET_MINUTES * 60 / min(times)) if times else None


def candidate_config(name: str, unet: UNetConfig) -> ModelConfig:
    """The lite preset with the UNet `unet`, named `name`."""
    return dataclasses.replace(presets.get("lite"), name=name, unet=unet)


def fp16_folder_mb(model: LoadedModel) -> float:
    """Megabytes (10⁶ bytes) of the model folder written with float16 weights."""
    with tempfile.TemporaryDirectory(prefix="resshift-lite-") as folder:
        path = Path(folder)
        unet, autoencoder = model.unet.state_dict(), model.autoencoder.state_dict()
        write_model_folder(path, model.config, unet, autoencoder, dtype=torch.float16)
        return sum(f.stat().st_size for f in path.iterdir()) / 1e6


def train_step_seconds(model: LoadedModel, batch: int, lr_size: int, steps: int, dtype: torch.dtype) -> float:
    """Mean CPU seconds of `steps` training steps (after one untimed warm-up) on random data of the trainer's
    shapes: x_t (batch, C, lr_size, lr_size), lq (batch, 3, lr_size, lr_size), t uniform; MSE to z₀."""
    unet = model.unet.train().requires_grad_(True)
    optimiser = torch.optim.AdamW(unet.parameters(), lr=5e-5)
    generator = torch.Generator().manual_seed(SEED)
    channels = model.config.unet.in_channels
    shape = (batch, channels, lr_size, lr_size)
    z0, x_t = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    lq = torch.rand(batch, 3, lr_size, lr_size, generator=generator) * 2 - 1
    t = torch.randint(0, model.config.diffusion.steps, (batch,), generator=generator)
    context = contextlib.nullcontext() if dtype == torch.float32 else torch.autocast("cpu", dtype=dtype)

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        with context:
            loss = F.mse_loss(unet(x_t, t, lq).float(), z0)
        loss.backward()
        optimiser.step()

    step()
    started = time.process_time()
    for _ in range(steps):
        step()
    unet.eval().requires_grad_(False)
    return (time.process_time() - started) / steps


def inference_s_per_mp(model: LoadedModel, size: int, dtype: torch.dtype) -> float:
    """CPU seconds per output megapixel of one untiled `upscale_tensor` call on a size×size LR image,
    after one untimed warm-up call (weights cast, allocator warm); the float32 weights are restored after."""
    image = test_image(size)
    options = UpscaleOptions(dtype=dtype, tile=0)
    runtime = Runtime(model)
    upscale_tensor(runtime, image, options)
    started = time.process_time()
    out = upscale_tensor(runtime, image, options)
    seconds = time.process_time() - started
    runtime.prepare(torch.float32, torch.contiguous_format)
    return seconds / (out.shape[-2] * out.shape[-1] / 1e6)


def measure(name: str, model: LoadedModel, args: argparse.Namespace, dtype: torch.dtype) -> Row:
    """All measurements of one model (training steps only for the candidates, which have no VQ)."""
    log = lambda text: print(f"{name}: {text}", file=sys.stderr)  # noqa: E731
    parameters = sum(p.numel() for p in model.unet.parameters()) / 1e6
    log(f"{parameters:.2f} M UNet parameters")
    trainable = model.config.autoencoder.latent_channels != 3 and args.train_steps > 0
    fp32 = (
        train_step_seconds(model, args.batch, args.lr_size, args.train_steps, torch.float32)
        if trainable
        else None
    )
    bf16 = (
        train_step_seconds(model, args.batch, args.lr_size, args.train_steps, torch.bfloat16)
        if trainable
        else None
    )
    log(f"train step fp32 {fp32} s, bf16 {bf16} s")
    infer = inference_s_per_mp(model, args.infer_size, dtype) if args.infer_size else None
    log(f"inference {infer} s/MP")
    return Row(name, parameters, fp16_folder_mb(model), fp32, bf16, infer)


def format_table(rows: Sequence[Row]) -> str:
    """A text table, one row per model."""
    header = (
        "model",
        "UNet M",
        "fp16 MB",
        "train fp32 CPU s/it",
        "train bf16 CPU s/it",
        f"its/{BUDGET_MINUTES} min/core",
        "infer CPU s/MP",
        "x realsr",
    )
    fmt = lambda v, spec: "-" if v is None else spec.format(v)  # noqa: E731
    cells = [
        (
            r.name,
            fmt(r.parameters_m, "{:.2f}"),
            fmt(r.fp16_mb, "{:.1f}") + (" (over)" if r.fp16_mb > WHEEL_BUDGET_MB else ""),
            fmt(r.train_fp32_s, "{:.2f}"),
            fmt(r.train_bf16_s, "{:.2f}"),
            fmt(r.iterations(), "{}"),
            fmt(r.infer_s_per_mp, "{:.2f}"),
            fmt(r.speedup, "{:.1f}"),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in (header, *cells)) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in (header, *cells)]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidates", default=",".join(CANDIDATES), help="comma-separated candidate names")
    p.add_argument("--batch", type=int, default=8, help="training batch (default 8)")
    p.add_argument("--lr-size", type=int, default=64, help="LR crop side of a training sample (default 64)")
    p.add_argument("--train-steps", type=int, default=3, help="timed training steps (default 3; 0 skips)")
    p.add_argument("--infer-size", type=int, default=128, help="LR side for inference (default 128; 0 skips)")
    p.add_argument("--precision", default="auto", help="inference precision: auto, fp32, bf16 (default auto)")
    p.add_argument("--reference", default="realsr-v3", help="registry model for the speed-up, or none")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: CPU time = one core)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = resolve_precision(args.precision, torch.device("cpu"))
    rows = []
    for name in [n.strip() for n in args.candidates.split(",") if n.strip()]:
        model = presets.fresh_model(candidate_config(name, CANDIDATES[name]), SEED)
        rows.append(measure(name, model, args, dtype))
    if args.reference != "none" and args.infer_size:
        reference = measure(args.reference, random_model(args.reference), args, dtype)
        for row in rows:
            row.speedup = reference.infer_s_per_mp / row.infer_s_per_mp if row.infer_s_per_mp else None
        rows.append(reference)
    print(json.dumps([dataclasses.asdict(r) for r in rows], indent=1) if args.json else format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
