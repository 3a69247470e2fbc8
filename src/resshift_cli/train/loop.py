"""The training loop: AdamW with warm-up, EMA, autocast, gradient accumulation, checkpoints, DDP.

One `Trainer` holds what a checkpoint holds (the trainable UNet, its EMA, the optimiser, the loss scaler,
the RNG states and the iteration) and saves and restores it with the same code. Per iteration: draw this
rank's slice of the global batch (keyed by global sample index, see `data`), accumulate gradients over
micro-batches, step, update the EMA, log, validate and save when due. Library code never draws: progress
goes to a callback.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.checkpoint import checkpoint
from torch.utils.data import DataLoader

from resshift_cli.devices import DTYPES, autocast
from resshift_cli.errors import UsageError
from resshift_cli.loading import LoadedModel, load_model
from resshift_cli.nets.unet import UNetModelSwin
from resshift_cli.schedule import make_schedule
from resshift_cli.train import distributed
from resshift_cli.train.checkpoint import read_state, recover, write_model
from resshift_cli.train.data import NOISE_STREAM, TrainPairs, keyed_generator
from resshift_cli.train.distributed import World
from resshift_cli.train.objective import decode_for_loss, diffusion_loss, latent_shape
from resshift_cli.train.perceptual import Perceptual
from resshift_cli.train.validate import ValidationSet, validation_loss, validation_psnr

DEFAULT_WARMUP = 5000
LOG_FILE = "log.jsonl"
LAST = "last"
FINAL = "final"
LR_SCHEDULES = ("constant", "cosine")
SAME_ON_RESUME = (
    "batch_size",
    "learning_rate",
    "warmup",
    "lr_schedule",
    "lr_floor",
    "weight_decay",
    "ema_rate",
    "seed",
    "lpips_weight",
    "data",
)
"""Options a resumed run must share with the checkpoint: they define the data stream and the updates."""


@dataclass(frozen=True)
class TrainOptions:
    """Settings of one run. Official realsr defaults: AdamW lr 5e-5, weight decay 0, EMA 0.999, warm-up
    5000 iterations then constant (v1/v2) or cosine down to 2e-5 (v3). `warmup` None = `DEFAULT_WARMUP`
    but at most a tenth of the iterations (a resumed run keeps its checkpoint's). `micro_batch` 0 = the
    whole per-process batch at once. `data` describes the training pairs (for the resume check)."""

    iterations: int
    batch_size: int
    micro_batch: int = 0
    learning_rate: float = 5e-5
    warmup: int | None = None
    lr_schedule: str = "constant"
    lr_floor: float = 2e-5
    weight_decay: float = 0.0
    ema_rate: float = 0.999
    seed: int = 0
    precision: str = "fp32"
    grad_checkpoint: bool = False
    lpips_weight: float = 0.0
    val_every: int = 0
    save_every: int = 1000
    workers: int = 0
    data: dict[str, Any] = field(default_factory=dict)

    def check(self, world: World) -> None:
        """Raise `UsageError` for inconsistent settings."""
        if self.batch_size % world.size:
            raise UsageError(f"--batch-size {self.batch_size} is not divisible by {world.size} processes")
        if self.lr_schedule not in LR_SCHEDULES:
            raise UsageError(
                f"unknown --lr-schedule {self.lr_schedule!r} (choose from {', '.join(LR_SCHEDULES)})"
            )
        if self.precision not in DTYPES:
            raise UsageError(f"unknown precision {self.precision!r} (choose from {', '.join(DTYPES)})")
        if self.seed < 0:
            raise UsageError(f"--seed must be 0 or more, got {self.seed}")


@dataclass(frozen=True)
class TrainEvent:
    """What the loop reports after each iteration (and after each validation, with `validation` set).

    loss: the global batch's mean objective; lr: the rate of that update; seconds: wall time since this
    process started training; validation: {"val_loss": ..., "val_psnr": ...} or None."""

    iteration: int
    iterations: int
    loss: float
    lr: float
    seconds: float
    validation: dict[str, float] | None = None


TrainCallback = Callable[[TrainEvent], None]


def warmup_of(options: TrainOptions) -> int:
    """The warm-up length: as given, or `DEFAULT_WARMUP` capped at a tenth of the iterations."""
    return min(DEFAULT_WARMUP, options.iterations // 10) if options.warmup is None else options.warmup


def learning_rate(n: int, options: TrainOptions) -> float:
    """The rate of update n (1-based): linear warm-up n/warmup·lr, then constant, or cosine annealing
    from lr to `lr_floor` over the remaining iterations (the official `CosineAnnealingLR`)."""
    base, warmup = options.learning_rate, warmup_of(options)
    if n <= warmup:
        return base * n / warmup
    if options.lr_schedule == "constant":
        return base
    span = max(1, options.iterations - warmup)
    progress = min(1.0, (n - warmup) / span)
    return options.lr_floor + (base - options.lr_floor) * (1 + math.cos(math.pi * progress)) / 2


def capture_rng() -> dict[str, Any]:
    """The global torch RNG states (CPU, and every CUDA device when present): they drive dropout."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) until the block is done, so an update is never half applied."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, _frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def checkpoint_blocks(unet: UNetModelSwin) -> None:
    """Recompute each UNet block's activations in the backward pass (torch.utils.checkpoint): less memory,
    about a third more compute. The module tree and the parameter names are unchanged."""
    for block in [*unet.input_blocks, unet.middle_block, *unet.output_blocks]:
        forward = block.forward
        block.forward = functools.partial(checkpoint, forward, use_reentrant=False)


class KeyBatches:
    """Batch sampler: for each iteration, the global sample indices of this rank's slice of the batch."""

    def __init__(self, start: int, stop: int, batch_size: int, world: World) -> None:
        self.start, self.stop, self.batch_size, self.world = start, stop, batch_size, world

    def keys(self, iteration: int) -> list[int]:
        """Indices of iteration `iteration` (0-based) for this rank: contiguous, rank after rank."""
        local = self.batch_size // self.world.size
        first = iteration * self.batch_size + self.world.rank * local
        return list(range(first, first + local))

    def __iter__(self) -> Iterator[list[int]]:
        return (self.keys(i) for i in range(self.start, self.stop))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


class Trainer:
    """The state of a run and the code that advances, validates and saves it."""

    def __init__(
        self,
        model: LoadedModel,
        data: TrainPairs,
        run_dir: Path,
        options: TrainOptions,
        world: World | None = None,
        val: ValidationSet | None = None,
        perceptual: Perceptual | None = None,
    ) -> None:
        self.model, self.data, self.run_dir, self.options = model, data, run_dir, options
        self.world = world or World()
        self.val, self.perceptual = val, perceptual
        self.device = next(model.unet.parameters()).device
        self.dtype = DTYPES[options.precision]
        self.schedule = make_schedule(model.config.diffusion)
        self.config = replace(model.config, name=run_dir.name or model.config.name)
        self.ema = LoadedModel(self.config, copy.deepcopy(model.unet), model.autoencoder, run_dir / FINAL)
        unet = model.unet.train().requires_grad_(True)
        if options.grad_checkpoint:
            checkpoint_blocks(unet)
        self.denoise = self._wrap(unet)
        self.optimizer = torch.optim.AdamW(
            unet.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.iteration = 0
        self.saved_at = -1
        self.rng = capture_rng()
        self.started = time.perf_counter()

    def _wrap(self, unet: UNetModelSwin) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        if not self.world.distributed:
            return unet
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(unet, device_ids=ids)

    # 1. one update ------------------------------------------------------------------------------------

    def draws(self, keys: list[int], height: int, width: int) -> tuple[Tensor, Tensor]:
        """t (B,) uniform in [0, T) and ε (B, C, h, w) per sample, keyed by its global index."""
        shape = latent_shape(self.model, height, width)
        generators = [keyed_generator(self.options.seed, NOISE_STREAM, g) for g in keys]
        t = torch.stack([torch.randint(0, self.schedule.steps, (), generator=gen) for gen in generators])
        noise = torch.stack([torch.randn(shape, generator=gen) for gen in generators])
        return t.to(self.device), noise.to(self.device)

    def _loss(self, hr: Tensor, lr: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """(B,) objective per sample: Eq. 8's MSE, plus the weighted LPIPS of the decoded x̂₀ if asked."""
        terms = diffusion_loss(self.denoise, self.model, self.schedule, hr, lr, t, noise)
        if self.perceptual is None:
            return terms.loss
        decoded = decode_for_loss(self.model, terms.x0)
        return terms.loss + self.options.lpips_weight * self.perceptual(decoded, hr).float()

    def step(self, hr: Tensor, lr: Tensor, keys: list[int]) -> float:
        """One update on this rank's (b, 3, H, W) HR / (b, 3, H/s, W/s) LR in [−1, 1]; returns the global
        batch's mean loss. Each micro-batch backpropagates sum(loss)/b, so the accumulated gradient (after
        DDP's average over ranks) is that of the global batch mean."""
        t, noise = self.draws(keys, hr.shape[-2], hr.shape[-1])
        hr, lr = hr.to(self.device), lr.to(self.device)
        local = len(keys)
        micro = self.options.micro_batch or local
        total = torch.zeros((), device=self.device)
        self.optimizer.zero_grad(set_to_none=True)
        for start in range(0, local, micro):
            part = slice(start, start + micro)
            syncs = start + micro >= local or not self.world.distributed
            with contextlib.nullcontext() if syncs else self.denoise.no_sync():  # type: ignore[union-attr]
                with autocast(self.device, self.dtype):
                    loss = self._loss(hr[part], lr[part], t[part], noise[part])
                self.scaler.scale(loss.sum() / local).backward()
            total += loss.detach().float().sum()
        with deferred_interrupt():
            self._update()
        return float(distributed.all_sum(total, self.world)) / self.options.batch_size

    def _update(self) -> None:
        """Optimiser step at this update's rate, EMA (Polyak) update, iteration count, RNG snapshot."""
        rate = learning_rate(self.iteration + 1, self.options)
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with torch.no_grad():
            decay = self.options.ema_rate
            for ema, param in zip(self.ema.unet.parameters(), self.model.unet.parameters(), strict=True):
                ema.mul_(decay).add_(param.detach(), alpha=1 - decay)
        self.iteration += 1
        self.rng = capture_rng()

    # 2. checkpoints -----------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The training state beside the EMA model folder (plain tensors and builtins)."""
        options = replace(self.options, warmup=warmup_of(self.options))
        return {
            "iteration": self.iteration,
            "samples": self.iteration * self.options.batch_size,
            "unet": {k: v.detach().cpu() for k, v in self.model.unet.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": self.rng,
            "options": asdict(options),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from `state` (written by `state()`); the EMA weights came with the model folder."""
        check_resumable(state["options"], self.options)
        self.model.unet.load_state_dict(state["unet"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        self.rng = state["rng"]
        restore_rng(self.rng)

    def save(self, name: str, with_state: bool = True) -> None:
        """Write `RUN_DIR/name` (EMA model folder, plus the training state) atomically, on rank 0."""
        if self.world.main:
            ema = self.ema.unet.state_dict()
            state = self.state() if with_state else None
            write_model(self.run_dir / name, self.config, ema, self.model.autoencoder.state_dict(), state)
        if name == LAST:
            self.saved_at = self.iteration
        distributed.barrier(self.world)

    # 3. the loop --------------------------------------------------------------------------------------

    def _log(self, record: dict[str, Any]) -> None:
        if self.world.main:
            with (self.run_dir / LOG_FILE).open("a", encoding="utf-8") as log:
                log.write(json.dumps(record) + "\n")

    def _event(self, loss: float, validation: dict[str, float] | None = None) -> TrainEvent:
        seconds = time.perf_counter() - self.started
        rate = learning_rate(max(1, self.iteration), self.options)
        return TrainEvent(self.iteration, self.options.iterations, loss, rate, seconds, validation)

    def validate(self) -> dict[str, float] | None:
        """Validation loss and PSNR(Y) of the EMA model, logged; None without a validation set."""
        if self.val is None:
            return None
        metrics = None
        if self.world.main:
            metrics = {
                "val_loss": validation_loss(self.ema, self.schedule, self.val),
                "val_psnr": validation_psnr(self.ema, self.val),
            }
            self._log({"iteration": self.iteration, **metrics, "seconds": self._event(0.0).seconds})
        distributed.barrier(self.world)
        return metrics

    def loader(self) -> DataLoader[tuple[Tensor, Tensor]]:
        batches = KeyBatches(self.iteration, self.options.iterations, self.options.batch_size, self.world)
        workers = self.options.workers
        pin = self.device.type == "cuda"
        return DataLoader(self.data, batch_sampler=batches, num_workers=workers, pin_memory=pin)

    def _after_step(self, loss: float, callback: TrainCallback | None) -> None:
        """Log, validate and save when due, then tell the callback."""
        event = self._event(loss)
        self._log({"iteration": event.iteration, "loss": loss, "lr": event.lr, "seconds": event.seconds})
        every = self.options.val_every
        due = (every and self.iteration % every == 0) or self.iteration == self.options.iterations
        validation = self.validate() if due else None
        if self.options.save_every and self.iteration % self.options.save_every == 0:
            self.save(LAST)
        if callback is not None and self.world.main:
            callback(replace(event, validation=validation))

    def run(self, callback: TrainCallback | None = None) -> None:
        """Train up to `options.iterations`, then write `last` and `final`. On Ctrl-C (KeyboardInterrupt)
        the state after the last completed iteration is saved as `last` and the interrupt re-raised."""
        batches = KeyBatches(self.iteration, self.options.iterations, self.options.batch_size, self.world)
        try:
            if self.iteration == 0:
                validation = self.validate()
                if validation is not None and callback is not None:
                    callback(self._event(math.nan, validation))
            for it, (hr, lr) in zip(
                range(self.iteration, self.options.iterations), self.loader(), strict=True
            ):
                self._after_step(self.step(hr, lr, batches.keys(it)), callback)
        except KeyboardInterrupt:
            if self.saved_at != self.iteration:
                self.save(LAST)
            raise
        if self.saved_at != self.iteration:
            self.save(LAST)
        self.save(FINAL, with_state=False)


def check_resumable(saved: dict[str, Any], options: TrainOptions) -> None:
    """`UsageError` naming the options that differ from the checkpoint's (they would change the run)."""
    current = asdict(replace(options, warmup=warmup_of(options)))
    changed = [
        f"{k} ({saved.get(k)!r} → {current[k]!r})" for k in SAME_ON_RESUME if saved.get(k) != current[k]
    ]
    if changed:
        raise UsageError(f"--resume: options differ from the checkpoint's: {', '.join(changed)}")


def prepare_run_dir(run_dir: Path, resume: bool) -> None:
    """A new run needs a folder without a run in it; a resumed one needs `RUN_DIR/last`."""
    recover(run_dir / LAST)
    if resume and not (run_dir / LAST).is_dir():
        raise UsageError(f"{run_dir}: nothing to resume (no {LAST} checkpoint)")
    if not resume and any((run_dir / name).exists() for name in (LAST, FINAL, LOG_FILE)):
        raise UsageError(
            f"{run_dir}: already holds a run; pass --resume to continue it, or choose another -o"
        )
    run_dir.mkdir(parents=True, exist_ok=True)


def resume_model(run_dir: Path) -> LoadedModel:
    """The EMA model of `RUN_DIR/last` (its config, EMA UNet and autoencoder) to continue from."""
    recover(run_dir / LAST)
    if not (run_dir / LAST).is_dir():
        raise UsageError(f"{run_dir}: nothing to resume (no {LAST} checkpoint)")
    return load_model(run_dir / LAST)


def _trim_log(run_dir: Path, iteration: int) -> None:
    """Drop log lines past the checkpoint's iteration (written by a run killed after it)."""
    path = run_dir / LOG_FILE
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line)["iteration"] <= iteration]
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    partial.replace(path)


def fit(
    model: LoadedModel,
    data: TrainPairs,
    run_dir: Path,
    options: TrainOptions,
    device: torch.device,
    val: ValidationSet | None = None,
    perceptual: Callable[[torch.device], Perceptual] | None = None,
    resume: bool = False,
    callback: TrainCallback | None = None,
) -> Path:
    """Train `model` on `data` into `run_dir` (under torchrun: one process of a DDP run); returns the
    final model folder. `perceptual(device)` makes the LPIPS term when `options.lpips_weight` > 0."""
    world = distributed.start(device)
    try:
        options.check(world)
        device = distributed.device_for(device, world)
        if world.main:
            prepare_run_dir(run_dir, resume)
        distributed.barrier(world)
        if not resume:
            torch.manual_seed(options.seed)
        state = read_state(run_dir / LAST) if resume else None
        if state is not None and options.warmup is None:
            options = replace(options, warmup=warmup_of(TrainOptions(**state["options"])))
        lpips = perceptual(device) if perceptual is not None and options.lpips_weight > 0 else None
        trainer = Trainer(model.to(device), data, run_dir, options, world, val, lpips)
        if state is not None:
            trainer.restore(state)
            if world.main:
                _trim_log(run_dir, trainer.iteration)
        trainer.run(callback)
        return run_dir / FINAL
    finally:
        distributed.stop(world)
