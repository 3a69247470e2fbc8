"""`resshift eval` as a library: pair LR (or SR) images with their ground truth, run each method, score.

Pairs are matched by relative path without the suffix (`a/b.png` in LR_DIR with `a/b.jpg` in GT_DIR).
Methods: the bicubic ×scale baseline (`pipeline.bicubic_upsample`, the upsampling the model itself is
conditioned on: Keys a = −0.75, no antialias, clamped to [0, 1]) and any loaded model, run through
`runner.upscale_tensor`; or, in SR mode, the images already upscaled. Scores: `metrics.psnr_y` and
`metrics.ssim_y` (Y channel, border crop, 8-bit rounding), and the perceptual metrics available, on the
whole 8-bit-rounded images. A GT up to scale − 1 pixels larger than scale × LR is cropped at the bottom and
right (the usual "modcrop"); any other size difference fails that pair.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from resshift_cli import metrics
from resshift_cli.errors import ImageError, ResshiftError, UsageError
from resshift_cli.images import model_rgb, read_picture
from resshift_cli.jobs import find_images
from resshift_cli.loading import LoadedModel
from resshift_cli.pipeline import UpscaleOptions, bicubic_upsample
from resshift_cli.runner import Runtime, upscale_tensor

SCALE = 4
BICUBIC = "bicubic"
Upscale = Callable[[torch.Tensor], torch.Tensor]
"""(1, 3, h, w) in [0, 1] → (1, 3, scale·h, scale·w) in [0, 1]."""


@dataclass(frozen=True)
class Pair:
    """One test image: `name` (relative path without suffix), its input (LR, or SR in SR mode) and GT."""

    name: str
    source: Path
    gt: Path


@dataclass(frozen=True)
class Problem:
    """A pair (or an unpaired file) that could not be scored, with its one-line reason."""

    name: str
    message: str


@dataclass(frozen=True)
class Method:
    """A row of the table: `name` and a loader that returns its upscaler (None in SR mode)."""

    name: str
    load: Callable[[], Upscale] | None


@dataclass(frozen=True)
class ImageScore:
    """Scores of one method on one image; perceptual values by metric name."""

    method: str
    image: str
    psnr: float
    ssim: float
    perceptual: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodScore:
    """Mean scores of one method over the images it was scored on (perceptual: None where missing)."""

    method: str
    images: int
    psnr: float
    ssim: float
    perceptual: dict[str, float | None]


@dataclass
class Report:
    """Everything `eval` prints: summaries, per-image scores, failures and missing perceptual metrics."""

    methods: list[MethodScore]
    images: list[ImageScore]
    failed: list[Problem]
    missing: dict[str, str]
    crop: int
    scale: int


# 1. Pairs --------------------------------------------------------------------------------------------------


def _by_stem(folder: Path, label: str, problems: list[Problem]) -> dict[str, Path]:
    """Relative path without suffix → file, for every image under `folder`; two files sharing a stem are
    reported (both left out)."""
    found: dict[str, list[Path]] = {}
    for path in find_images(folder, recursive=True):
        found.setdefault(path.relative_to(folder).with_suffix("").as_posix(), []).append(path)
    for stem, paths in found.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            problems.append(
                Problem(stem, f"{folder / stem}: several {label} images share this name ({names})")
            )
    return {stem: paths[0] for stem, paths in found.items() if len(paths) == 1}


def match_pairs(inputs: Path, gt: Path, label: str = "LR") -> tuple[list[Pair], list[Problem]]:
    """Pairs of `inputs` (LR or SR) and `gt` files by relative stem, sorted; every unpaired or ambiguous
    file becomes a Problem naming it. Raises UsageError when either folder has no images."""
    for folder, what in ((inputs, label), (gt, "GT")):
        if not folder.is_dir():
            raise UsageError(f"{folder}: not a folder ({what} images)")
        if not find_images(folder, recursive=True):
            raise UsageError(f"{folder}: no images (the {what} folder is empty)")
    problems: list[Problem] = []
    sources, truths = _by_stem(inputs, label, problems), _by_stem(gt, "GT", problems)
    for stem in sorted(sources.keys() - truths.keys()):
        problems.append(Problem(stem, f"{sources[stem]}: no GT image named {stem}.* in {gt}"))
    for stem in sorted(truths.keys() - sources.keys()):
        problems.append(Problem(stem, f"{truths[stem]}: no {label} image named {stem}.* in {inputs}"))
    pairs = [Pair(stem, sources[stem], truths[stem]) for stem in sorted(sources.keys() & truths.keys())]
    return pairs, problems


# 2. Methods ------------------------------------------------------------------------------------------------


def bicubic_method(scale: int = SCALE) -> Method:
    """The baseline: `pipeline.bicubic_upsample` ×scale, clamped to [0, 1]."""
    return Method(BICUBIC, lambda: lambda lr: bicubic_upsample(lr, scale).clamp(0, 1))


def model_method(name: str, load: Callable[[], LoadedModel], options: UpscaleOptions) -> Method:
    """A model row: `load()` runs when the row starts; every image is upscaled with `options` (seed, …)."""

    def loaded() -> Upscale:
        runtime = Runtime(load())
        return lambda lr: upscale_tensor(runtime, lr, options).float().cpu()

    return Method(name, loaded)


# 3. Scoring ------------------------------------------------------------------------------------------------


def _size(array: np.ndarray) -> str:
    return f"{array.shape[1]}×{array.shape[0]}"


def _fit_gt(gt: np.ndarray, height: int, width: int, pair: Pair, what: str) -> np.ndarray:
    """GT cropped to (height, width) when it is at most scale − 1 pixels larger (modcrop), else an error."""
    extra_h, extra_w = gt.shape[0] - height, gt.shape[1] - width
    if 0 <= extra_h < SCALE and 0 <= extra_w < SCALE:
        return gt[:height, :width]
    raise ImageError(f"{pair.gt}: GT is {_size(gt)}, expected {width}×{height} ({what})")


def _read_rgb(path: Path) -> np.ndarray:
    return model_rgb(read_picture(path))


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()


def _to_array(image: torch.Tensor) -> np.ndarray:
    return image[0].permute(1, 2, 0).float().cpu().numpy()


def _produce(pair: Pair, upscale: Upscale | None, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(SR, GT) arrays (H, W, 3) in [0, 1] of one pair; ResshiftError for unreadable or mis-sized files."""
    source, gt = _read_rgb(pair.source), _read_rgb(pair.gt)
    if upscale is None:
        return source, _fit_gt(gt, source.shape[0], source.shape[1], pair, f"the size of SR {pair.source}")
    height, width = source.shape[0] * scale, source.shape[1] * scale
    gt = _fit_gt(gt, height, width, pair, f"{scale} × LR {_size(source)} of {pair.source}")
    return _to_array(upscale(_to_tensor(source))), gt


def _score(
    method: str,
    name: str,
    sr: np.ndarray,
    gt: np.ndarray,
    crop: int,
    perceptual: Sequence[metrics.Perceptual],
) -> ImageScore:
    """PSNR/SSIM by the SR protocol; perceptual metrics on the 8-bit-rounded whole images."""
    values: dict[str, float] = {}
    if perceptual:
        sr8, gt8 = (_to_tensor(metrics.to_8bit(a).astype(np.float32) / 255.0) for a in (sr, gt))
        values = {p.name: p.score(sr8, gt8) for p in perceptual if p.score is not None}
    try:
        return ImageScore(method, name, metrics.psnr_y(sr, gt, crop), metrics.ssim_y(sr, gt, crop), values)
    except ValueError as err:
        raise ImageError(f"{name}: {err}") from err


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def summarise(method: str, scores: Sequence[ImageScore], names: Sequence[str]) -> MethodScore:
    """Means over `scores` (those of `method`); a perceptual metric in `names` absent from them is None."""
    own = [s for s in scores if s.method == method]
    perceptual = {
        name: _mean([s.perceptual[name] for s in own]) if own and name in own[0].perceptual else None
        for name in names
    }
    return MethodScore(
        method, len(own), _mean([s.psnr for s in own]), _mean([s.ssim for s in own]), perceptual
    )


def _run_method(
    method: Method,
    pairs: Sequence[Pair],
    crop: int,
    scale: int,
    perceptual: Sequence[metrics.Perceptual],
    failed: list[Problem],
) -> Iterator[ImageScore]:
    """Score `method` on every pair not already failed; a pair that fails is recorded once and skipped."""
    upscale = method.load() if method.load is not None else None
    for pair in pairs:
        if any(problem.name == pair.name for problem in failed):
            continue
        try:
            sr, gt = _produce(pair, upscale, scale)
            score = _score(method.name, pair.name, sr, gt, crop, perceptual)
        except ResshiftError as err:
            failed.append(Problem(pair.name, str(err)))
            continue
        yield score


def evaluate(
    pairs: Sequence[Pair],
    methods: Sequence[Method],
    *,
    crop: int = SCALE,
    scale: int = SCALE,
    perceptual: Sequence[metrics.Perceptual] = (),
    problems: Sequence[Problem] = (),
    on_image: Callable[[str, str], None] | None = None,
) -> Report:
    """Score every method on every pair, one method at a time (so one model is in memory at a time).

    `problems` (unpaired files) are carried into the report; `on_image(method, image)` is told after each.
    """
    failed = list(problems)
    scores: list[ImageScore] = []
    for method in methods:
        for score in _run_method(method, pairs, crop, scale, perceptual, failed):
            scores.append(score)
            if on_image is not None:
                on_image(method.name, score.image)
    names = [p.name for p in perceptual]
    summaries = [summarise(method.name, scores, names) for method in methods]
    missing = {p.name: p.missing for p in perceptual if p.missing is not None}
    return Report(summaries, scores, failed, missing, crop, scale)
