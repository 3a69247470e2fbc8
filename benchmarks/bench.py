"""Time the real upscaling pipeline: seconds per output megapixel, per-stage split, peak memory, fidelity.

Runs `resshift_cli.runner.upscale_tensor` with random weights of a named model's full-size architecture
(no download: the cost does not depend on the weight values) or with a model folder, over LR sizes, tiles,
precisions and devices. Each configuration runs in a fresh subprocess so that peak memories do not mix.
Our own float32 untiled run of each size is the baseline: every row shows its speed-up over that run and the
PSNR of its output against that run's output (same weights, same seed).

    python benchmarks/bench.py --model realsr-v3 --sizes 64,128 --tiles 0,64 --precisions fp32,bf16
    python benchmarks/bench.py --model realsr-v1 --sizes 64 --precisions bf16 --steps 15,8,5,4

`--steps` runs fewer sampling steps than the model was trained with (respaced, as `resshift upscale --steps`);
the baseline stays the full-step run, so the PSNR column shows what the saved steps cost;
`--baseline-precision bf16` makes that baseline the bf16 full-step run, to see the steps' cost alone.

`--compile on` (or `both`) runs the UNet through torch.compile: one untimed warm-up run compiles it first
(its time is the "warm-up s" column), and the denoise column is then total − encode − decode, since a
compiled module cannot carry the timing hooks.

`--cpu-class amx,avx512-bf16,avx2` measures each case once per CPU class on this one machine: every
worker runs with the instruction sets PyTorch may use capped through the environment (oneDNN's
ONEDNN_MAX_CPU_ISA for convolutions and matmuls, ATen's ATEN_CPU_CAPABILITY for its own kernels), checks
that it really got the class (torch's reported capability, native bf16 or not) and refuses a class this CPU
cannot provide. Each class has its own float32 baseline; `--precisions auto` follows the capped class (bf16
only where it is native). `native` (the default) runs with both variables removed.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from resshift_cli import devices, registry
from resshift_cli.devices import (
    ATEN_CAPABILITY_ENV,
    ONEDNN_ISA_ENV,
    precision_label,
    resolve_device,
    resolve_precision,
    resolve_winograd,
)
from resshift_cli.loading import CONFIG_FILE, LoadedModel, load_model, networks, write_model_folder
from resshift_cli.pipeline import UpscaleOptions
from resshift_cli.runner import Runtime, upscale_tensor

WEIGHT_SEED = 0
IMAGE_SEED = 1
RANDOM_GAIN = 0.5
"""Random weights are PyTorch's default initialisation times this gain, so activations stay finite."""

CLASS_CAPS: dict[str, tuple[str, str] | None] = {
    "native": None,
    "amx": ("AVX512_CORE_AMX", "avx512"),
    "avx512-bf16": ("AVX512_CORE_BF16", "avx512"),
    "avx512": ("AVX512_CORE", "avx512"),
    "avx2": ("AVX2", "avx2"),
}
"""--cpu-class name → (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY) its workers run under; native: neither set."""
REFUSED = 3
"""Exit status of a worker (and of the benchmark) that refuses a CPU class this machine cannot provide."""

OFFICIAL_CHOP = (64, 16)
"""LR patch side and overlap of the official script's memory-safe chop (patch 64, stride 48)."""

STAGES = ("encode", "denoise", "decode")
GIB = 2**30
COLUMNS = (
    ("model", "{}"),
    ("device", "{}"),
    ("cpu class", "{}"),
    ("precision", "{}"),
    ("lr", "{}"),
    ("tile", "{}"),
    ("compile", "{}"),
    ("steps", "{}"),
    ("out MP", "{:.3f}"),
    ("load s", "{:.2f}"),
    ("warm-up s", "{:.1f}"),
    ("total s", "{:.2f}"),
    ("cpu s", "{:.2f}"),
    ("s/MP", "{:.1f}"),
    ("encode s", "{:.2f}"),
    ("denoise s", "{:.2f}"),
    ("s/step", "{:.3f}"),
    ("decode s", "{:.2f}"),
    ("other s", "{:.2f}"),
    ("process s", "{:.1f}"),
    ("peak GiB", "{:.2f}"),
    ("x base", "{:.2f}"),
    ("PSNR dB", "{:.1f}"),
)
"""Table header → format of the value; `None` values print as `-`."""


@dataclass(frozen=True)
class Case:
    """One configuration: an LR image of side `size` run `repeat` times; the fastest run is reported."""

    model: str
    device: str
    precision: str
    size: int
    tile: int
    tile_overlap: int
    tile_batch: int
    threads: int
    repeat: int
    compile: bool = False
    steps: int = 0
    """Sampling steps; 0 = the model's trained steps."""
    baseline_precision: str = "fp32"
    cpu_class: str = "native"
    """A `CLASS_CAPS` name: the instruction sets the worker may use."""
    official: bool = False
    """Run the official script's chop (`--official-tiling`, 64-pixel LR patches, stride 48) instead."""
    baseline_kind: str = "untiled"
    """What `baseline` is: "untiled" (our whole-image run), "official" (the 64-pixel chop) or "none"."""

    def label(self) -> str:
        label = f"{self.model} {self.device} {self.precision} lr {self.size} tile {self.tile or 'off'}"
        label += f" cpu {self.cpu_class}" if self.cpu_class != "native" else ""
        label += " official chop" if self.official else ""
        return label + (" compiled" if self.compile else "") + (f" {self.steps} steps" if self.steps else "")

    @property
    def baseline(self) -> Case:
        """The eager run of the same image on the same device and CPU class with all trained steps, in
        `baseline_precision` (float32 unless --baseline-precision): untiled, or with `baseline_kind`
        "official" the official 64-pixel chop (`OFFICIAL_CHOP`)."""
        tile, overlap = OFFICIAL_CHOP if self.baseline_kind == "official" else (0, 0)
        return dataclasses.replace(
            self,
            precision=self.baseline_precision,
            tile=effective_tile(self.size, tile),
            tile_overlap=overlap if effective_tile(self.size, tile) else 0,
            compile=False,
            steps=0,
            official=self.baseline_kind == "official",
        )


@dataclass
class Measurement:
    """Seconds, memory and fidelity of one `Case`; `None` where a value was not measured."""

    model: str
    device: str
    precision: str
    lr: int
    tile: int
    compile: bool
    steps: int
    official: bool
    out_mp: float
    load_s: float
    total_s: float
    cpu_s: float
    stages: dict[str, float]
    unet_calls: int
    peak_gib: float | None
    memory: str
    notes: list[str]
    cpu_class: str
    """The class the run really computed at (`devices.cpu_class()` under the caps)."""
    cpu_caps: list[str]
    """The cap variables the run had, `NAME=value`; empty for `native`."""
    cpu_capability: str
    """torch's reported ATen capability (`torch.backends.cpu.get_cpu_capability()`)."""
    native_bf16: bool
    warmup_s: float | None = None
    process_s: float | None = None
    speedup: float | None = None
    psnr_db: float | None = None

    def row(self) -> dict[str, object]:
        """Table cells keyed by the `COLUMNS` headers."""
        staged = sum(self.stages.values())
        return {
            "model": self.model,
            "device": self.device,
            "cpu class": self.cpu_class if self.cpu_caps else f"native={self.cpu_class}",
            "precision": self.precision,
            "lr": f"{self.lr}x{self.lr}",
            "tile": f"{self.tile or 'off'}{' official' if self.official else ''}",
            "compile": "on" if self.compile else "off",
            "steps": self.steps,
            "out MP": self.out_mp,
            "load s": self.load_s,
            "warm-up s": self.warmup_s,
            "total s": self.total_s,
            "cpu s": self.cpu_s,
            "s/MP": self.total_s / self.out_mp,
            "encode s": self.stages["encode"],
            "denoise s": self.stages["denoise"],
            "s/step": self.stages["denoise"] / self.steps,
            "decode s": self.stages["decode"],
            "other s": self.total_s - staged,
            "process s": self.process_s,
            "peak GiB": self.peak_gib,
            "x base": self.speedup,
            "PSNR dB": self.psnr_db,
        }


def random_model(name: str) -> LoadedModel:
    """Full-size networks of registry model `name` with seeded, down-scaled default initialisation."""
    config = registry.get(name).config()
    torch.manual_seed(WEIGHT_SEED)
    unet, autoencoder = networks(config.unet, config.autoencoder)
    for parameter in (*unet.parameters(), *autoencoder.parameters()):
        if parameter.dim() > 1:
            parameter.mul_(RANDOM_GAIN)
    return LoadedModel(config=config, unet=unet, autoencoder=autoencoder, folder=Path(f"random-{name}"))


def random_folder(name: str) -> Path:
    """`random_model(name)` written once as a float32 model folder in the temporary directory (reused by
    later workers and runs; keyed by the architecture), so that runs load weights from files as users do."""
    config = registry.get(name).config()
    digest = hashlib.sha256(config.to_json().encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / "resshift-bench-random" / f"{name}-{WEIGHT_SEED}-{digest}"
    if not (folder / CONFIG_FILE).is_file():
        model = random_model(name)
        write_model_folder(folder, config, model.unet.state_dict(), model.autoencoder.state_dict())
    return folder


def open_model(spec: str, device: torch.device) -> LoadedModel:
    """A model folder if `spec` is a directory, else random weights of the registry model `spec` (loaded
    from `random_folder`)."""
    model = load_model(Path(spec) if Path(spec).is_dir() else random_folder(spec))
    return model.to(device)


def synchronize(device: torch.device) -> None:
    """Wait for queued device work so wall-clock time is attributed to the right stage."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class StageClock:
    """Wall-clock seconds spent inside the modules of each stage, via forward pre/post hooks."""

    def __init__(self, model: Runtime, device: torch.device) -> None:
        ae = model.autoencoder
        self.modules: dict[str, list[nn.Module]] = {
            "encode": [ae.encoder, ae.quant_conv],
            "denoise": [] if model.compiled else [model.unet],
            "decode": [ae.quantize, ae.post_quant_conv, ae.decoder],
        }
        self.device = device
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.unet_calls = 0
        self.notes: list[str] = []
        """Retries the pipeline reported (e.g. a non-finite bf16 result redone in float32)."""
        self._started = 0.0

    def _before(self, _module: nn.Module, _inputs: object) -> None:
        synchronize(self.device)
        self._started = time.perf_counter()

    def _after(self, stage: str) -> Callable[[nn.Module, object, object], None]:
        def hook(_module: nn.Module, _inputs: object, _output: object) -> None:
            synchronize(self.device)
            self.seconds[stage] += time.perf_counter() - self._started
            self.unet_calls += stage == "denoise"

        return hook

    @contextmanager
    def running(self) -> Iterator[StageClock]:
        """Hooks installed for the duration of the block; counters start from zero."""
        self.seconds, self.unet_calls = dict.fromkeys(STAGES, 0.0), 0
        handles = [
            handle
            for stage, modules in self.modules.items()
            for module in modules
            for handle in (
                module.register_forward_pre_hook(self._before),
                module.register_forward_hook(self._after(stage)),
            )
        ]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()


def test_image(size: int) -> torch.Tensor:
    """A seeded smooth-plus-noise LR image (1, 3, size, size) in [0, 1]."""
    generator = torch.Generator().manual_seed(IMAGE_SEED)
    coarse = torch.rand(1, 3, max(size // 8, 1), max(size // 8, 1), generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (smooth + 0.1 * torch.rand(1, 3, size, size, generator=generator)).clamp(0, 1)


def peak_rss_gib() -> float | None:
    """Peak resident memory of this process so far (None where `resource` is unavailable)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / GIB if sys.platform == "darwin" else peak * 1024 / GIB


class Refused(RuntimeError):
    """A CPU class this machine cannot provide (or that did not take effect): one line, no measurement."""


def class_environment(cpu_class: str, base: dict[str, str]) -> dict[str, str]:
    """`base` with the caps of `cpu_class` set (or, for native, both cap variables removed)."""
    env = {k: v for k, v in base.items() if k not in (ONEDNN_ISA_ENV, ATEN_CAPABILITY_ENV)}
    caps = CLASS_CAPS[cpu_class]
    if caps is not None:
        env[ONEDNN_ISA_ENV], env[ATEN_CAPABILITY_ENV] = caps
    return env


def refuse_unavailable(classes: Sequence[str]) -> None:
    """Refuse (before anything runs) a class above what this CPU offers: a cap cannot add instructions."""
    hardware = devices.cpu_hardware_class()
    rank = devices.CPU_CLASSES.index
    possible = [name for name in CLASS_CAPS if name == "native" or rank(name) >= rank(hardware)]
    for name in classes:
        if name not in possible:
            raise Refused(
                f"--cpu-class {name} is not available: this CPU is {hardware}; it can measure"
                f" {', '.join(possible)}"
            )


def verify_cpu_class(requested: str) -> None:
    """In the worker: refuse unless the caps gave exactly the requested class and ATen capability."""
    caps = CLASS_CAPS[requested]
    if caps is None:
        return
    got, capability = devices.cpu_class(), torch.backends.cpu.get_cpu_capability()
    if got != requested or capability.lower() != caps[1]:
        raise Refused(
            f"--cpu-class {requested} did not take effect: the worker computes at {got}"
            f" (torch capability {capability})"
        )


def options_for(case: Case, device: torch.device) -> UpscaleOptions:
    return UpscaleOptions(
        dtype=resolve_precision(case.precision, device),
        winograd=resolve_winograd(case.precision, device),
        tile=case.tile,
        tile_overlap=case.tile_overlap,
        tile_batch=case.tile_batch,
        official_tiling=case.official,
        steps=case.steps or None,
    )


@dataclass
class Run:
    """One timed `upscale_tensor` call: wall and CPU seconds, per-stage seconds and the output."""

    total_s: float
    cpu_s: float
    stages: dict[str, float]
    unet_calls: int
    output: torch.Tensor


def timed_run(model: Runtime, image: torch.Tensor, options: UpscaleOptions, clock: StageClock) -> Run:
    """Upscale (1, 3, H, W) in [0, 1] once with the stage hooks on; the output (1, 3, 4H, 4W) on the CPU."""
    with clock.running():
        started, cpu_started = time.perf_counter(), time.process_time()
        output = upscale_tensor(model, image, options, notice=clock.notes.append)
        synchronize(clock.device)
        total, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    stages = dict(clock.seconds)
    if not clock.modules["denoise"]:  # compiled UNet: no hooks, the remainder is the denoiser
        stages["denoise"] = total - stages["encode"] - stages["decode"]
    return Run(total, cpu, stages, clock.unet_calls, output.float().cpu())


def peak_memory(device: torch.device, fresh_process: bool) -> tuple[float | None, str]:
    """(GiB, what was measured): the CUDA allocator peak since the last reset, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / GIB, "cuda allocated"
    return peak_rss_gib(), "rss" if fresh_process else "rss (whole benchmark process)"


def measure(case: Case, fresh_process: bool) -> tuple[Measurement, torch.Tensor]:
    """Load the model, run `case.repeat` upscales, keep the fastest; returns it and its (1, 3, 4H, 4W) output.

    1. load (or build) the model on the device: `load_s`;
    2. run the pipeline with stage hooks installed, best of `repeat` by total time;
    3. peak memory: CUDA allocator peak during the runs, else the process's peak RSS (whole life).
    """
    verify_cpu_class(case.cpu_class)
    device = resolve_device(case.device)
    if case.threads:
        torch.set_num_threads(case.threads)
    started = time.perf_counter()
    model = Runtime(open_model(case.model, device))
    synchronize(device)
    load_s = time.perf_counter() - started
    model.compile(case.compile)
    clock = StageClock(model, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    image, options = test_image(case.size), options_for(case, device)
    warmup_s = timed_run(model, image, options, clock).total_s if case.compile else None
    best = min((timed_run(model, image, options, clock) for _ in range(case.repeat)), key=lambda r: r.total_s)
    peak, memory = peak_memory(device, fresh_process)
    precision = case.precision
    precision += f"={precision_label(options.dtype, options.winograd)}" if precision == "auto" else ""
    result = Measurement(
        model=model.name,
        device=str(device),
        precision=precision,
        lr=case.size,
        tile=case.tile,
        compile=case.compile,
        steps=case.steps or model.config.diffusion.steps,
        official=case.official,
        out_mp=best.output.shape[-2] * best.output.shape[-1] / 1e6,
        load_s=load_s,
        total_s=best.total_s,
        cpu_s=best.cpu_s,
        stages=best.stages,
        unet_calls=best.unet_calls,
        peak_gib=peak,
        memory=memory,
        notes=clock.notes,
        cpu_class=devices.cpu_class(),
        cpu_caps=sorted(
            f"{name}={os.environ[name]}"
            for name in (ONEDNN_ISA_ENV, ATEN_CAPABILITY_ENV)
            if name in os.environ
        ),
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        native_bf16=devices.cpu_has_native_bf16(),
        warmup_s=warmup_s,
    )
    return result, best.output


def measure_in_subprocess(case: Case, workdir: Path) -> tuple[Measurement, torch.Tensor]:
    """`measure` in a fresh Python process (so peak RSS is this case's alone) under the caps of the case's CPU
    class; adds its wall time."""
    output_path = workdir / "output.npy"
    command = [sys.executable, __file__, "--worker", json.dumps(dataclasses.asdict(case)), str(output_path)]
    env = class_environment(case.cpu_class, dict(os.environ))
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    elapsed = time.perf_counter() - started
    if done.returncode == REFUSED:
        raise Refused(done.stderr.strip().splitlines()[-1].removeprefix("error: "))
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker failed for {case}:\n{done.stderr.strip()}")
    result = Measurement(**json.loads(done.stdout.strip().splitlines()[-1]))
    result.process_s = elapsed
    return result, torch.from_numpy(np.load(output_path))


def worker(case_json: str, output_path: str) -> None:
    """Subprocess entry: measure one case, save the output as .npy, print the measurement as JSON."""
    result, output = measure(Case(**json.loads(case_json)), fresh_process=True)
    np.save(output_path, output.numpy())
    print(json.dumps(dataclasses.asdict(result)))


def psnr(output: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB of [0, 1] images of the same shape; inf when identical."""
    mse = torch.mean((output.double() - reference.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def effective_tile(size: int, tile: int, multiple: int = 64) -> int:
    """0 when `tile` covers the whole padded LR canvas and that canvas is one size multiple (where every
    model's autoencoder runs whole too, `cost.choose_vae_tiling`): the pipeline then runs exactly as
    untiled. Else `tile`."""
    padded = -(-size // multiple) * multiple
    return 0 if tile >= padded == multiple else tile


def make_case(
    args: argparse.Namespace,
    device: str,
    size: int,
    tile: int,
    precision: str,
    compiled: bool,
    steps: int = 0,
    cpu_class: str = "native",
) -> Case:
    """The `Case` for one grid point; the overlap defaults to the pipeline's automatic one."""
    tile = effective_tile(size, tile)
    overlap = args.tile_overlap if args.tile_overlap is not None else UpscaleOptions(tile=tile).overlap
    return Case(
        model=args.model,
        device=device,
        precision=precision,
        size=size,
        tile=tile,
        tile_overlap=overlap if tile else 0,
        tile_batch=args.tile_batch,
        threads=args.threads,
        repeat=args.repeat,
        compile=compiled,
        steps=steps,
        baseline_precision=args.baseline_precision,
        cpu_class=cpu_class,
        baseline_kind=args.baseline,
    )


def plan_cases(args: argparse.Namespace) -> list[Case]:
    """Every (CPU class, device, size, tile, precision, compile, steps) once, each preceded by its float32
    untiled full-step baseline of the same class."""
    cases: list[Case] = []
    targets = (args.device, *args.extra_devices)
    compiles = {"off": (False,), "on": (True,), "both": (False, True)}[args.compile]
    grid = itertools.product(
        args.cpu_class, targets, args.sizes, args.tiles, args.precisions, compiles, args.steps
    )
    for cpu_class, device, size, tile, precision, compiled, steps in grid:
        case = make_case(args, device, size, tile, precision, compiled, steps, cpu_class)
        for wanted in (case,) if args.baseline == "none" else (case.baseline, case):
            if wanted not in cases:
                cases.append(wanted)
    return cases


def run_cases(cases: Sequence[Case], subprocesses: bool, log: Callable[[str], None]) -> list[Measurement]:
    """Measure each case in turn and fill in the speed-up and PSNR against its baseline."""
    results: dict[Case, tuple[Measurement, torch.Tensor]] = {}
    with tempfile.TemporaryDirectory(prefix="resshift-bench-") as workdir:
        for case in cases:
            log(f"running {case.label()}")
            results[case] = (
                measure_in_subprocess(case, Path(workdir))
                if subprocesses
                else measure(case, fresh_process=False)
            )
    for case, (result, output) in results.items():
        if case.baseline_kind == "none":
            continue
        base, base_output = results[case.baseline]
        result.speedup = base.total_s / result.total_s
        result.psnr_db = psnr(output, base_output)
    return [result for result, _ in results.values()]


def _cell(value: object, spec: str) -> str:
    if value is None:
        return "-"
    return spec.format(value) if isinstance(value, float) else str(value)


def format_table(results: Sequence[Measurement]) -> str:
    """A fixed-width text table with one row per measurement and the `COLUMNS` headers."""
    cells = [[_cell(r.row()[name], spec) for name, spec in COLUMNS] for r in results]
    header = [name for name, _ in COLUMNS]
    widths = [max(len(row[i]) for row in (header, *cells)) for i in range(len(header))]
    lines = [
        "  ".join(text.rjust(width) for text, width in zip(row, widths, strict=True))
        for row in (header, *cells)
    ]
    return "\n".join([lines[0], "  ".join("-" * width for width in widths), *lines[1:]])


def footnotes(results: Sequence[Measurement]) -> list[str]:
    """What the memory column measured, what each CPU class really ran with, and any retries the pipeline
    reported."""
    kinds = sorted({r.memory for r in results})
    lines = [
        f"peak GiB: {', '.join(kinds)}; x base: speed-up over the baseline (--baseline: untiled, or the"
        " official 64-pixel chop) full-step run of the same size and CPU class (fp32 unless"
        " --baseline-precision)"
    ]
    runs = {
        (r.cpu_class, " ".join(r.cpu_caps) or "no caps", r.cpu_capability, r.native_bf16) for r in results
    }
    lines += [
        f"cpu class {cls}: {caps}; torch capability {capability}; native bf16: {'yes' if bf16 else 'no'}"
        for cls, caps, capability, bf16 in sorted(runs)
    ]
    lines += [
        f"note ({r.precision}, lr {r.lr}, tile {r.tile or 'off'}): {n}" for r in results for n in r.notes
    ]
    return lines


def as_json(result: Measurement) -> dict[str, object]:
    """The measurement and its table row as strict JSON: an infinite PSNR (identical outputs) becomes null."""
    finite = lambda value: None if isinstance(value, float) and math.isinf(value) else value  # noqa: E731
    fields = {k: finite(v) for k, v in dataclasses.asdict(result).items()}
    return fields | {"row": {k: finite(v) for k, v in result.row().items()}}


def int_list(text: str) -> list[int]:
    """'64,128' → [64, 128]."""
    return [int(part) for part in text.split(",") if part.strip()]


def word_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def class_list(text: str) -> list[str]:
    """'amx,avx2' → ['amx', 'avx2'], each a `CLASS_CAPS` name."""
    names = word_list(text)
    unknown = [name for name in names if name not in CLASS_CAPS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown CPU class {unknown[0] if unknown else text!r}; use {', '.join(CLASS_CAPS)}"
        )
    return names


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model", default="realsr-v3", help="registry name (random full-size weights) or a model folder"
    )
    p.add_argument(
        "--sizes", type=int_list, default=[64, 128], help="LR sides, comma-separated (default 64,128)"
    )
    p.add_argument("--tiles", type=int_list, default=[0], help="LR tile sides, 0 = untiled (default 0)")
    p.add_argument("--tile-overlap", type=int, default=None, help="LR overlap of tiles (default: automatic)")
    p.add_argument(
        "--tile-batch", type=int, default=0, help="denoiser tiles per call (default 0: 4 on CUDA, else 1)"
    )
    p.add_argument("--precisions", type=word_list, default=["fp32", "bf16"], help="fp32,bf16,fp16 or auto")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument(
        "--extra-devices", type=word_list, default=[], help="more devices to compare, comma-separated"
    )
    p.add_argument(
        "--compile",
        choices=("off", "on", "both"),
        default="off",
        help="run the UNet through torch.compile (after an untimed warm-up run); both: each case twice",
    )
    p.add_argument(
        "--steps",
        type=int_list,
        default=[0],
        help="sampling steps, comma-separated, each at most the model's trained steps (default 0 = trained)",
    )
    p.add_argument(
        "--baseline-precision",
        default="fp32",
        help="precision of the untiled full-step baseline run (default fp32, the exact path)",
    )
    p.add_argument(
        "--baseline",
        choices=("untiled", "official", "none"),
        default="untiled",
        help="what x base and PSNR compare with: our untiled run (default), the official 64-pixel chop,"
        " or nothing (none: no baseline run)",
    )
    p.add_argument(
        "--cpu-class",
        type=class_list,
        default=["native"],
        help="CPU classes to measure, comma-separated: native (default), amx, avx512-bf16, avx512, avx2",
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--repeat", type=int, default=1, help="runs per configuration; the fastest is reported")
    p.add_argument("--json", action="store_true", help="print the measurements as JSON instead of a table")
    p.add_argument(
        "--no-subprocess", action="store_true", help="measure in this process (peak RSS then mixes)"
    )
    p.add_argument("--worker", nargs=2, metavar=("CASE_JSON", "OUTPUT_NPY"), help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options, run every configuration, print the table (or JSON) on stdout; progress on stderr."""
    args = parser().parse_args(argv)
    try:
        if args.worker:
            worker(*args.worker)
            return 0
        if args.threads:
            torch.set_num_threads(args.threads)
        if args.no_subprocess and args.cpu_class != ["native"]:
            raise Refused(
                "--cpu-class needs a worker process per case (caps apply at start-up): drop --no-subprocess"
            )
        refuse_unavailable(args.cpu_class)
        results = run_cases(
            plan_cases(args), not args.no_subprocess, lambda line: print(line, file=sys.stderr)
        )
    except Refused as err:
        print(f"error: {err}", file=sys.stderr)
        return REFUSED
    if args.json:
        print(json.dumps([as_json(r) for r in results], indent=2))
    else:
        print("\n".join([format_table(results), *footnotes(results)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
