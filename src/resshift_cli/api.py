"""`Upscaler`: the public object. Built once from a model name, folder or Hub address; called on images.

    from resshift_cli import Upscaler

    upscaler = Upscaler.from_pretrained("realsr-v3")          # or a model folder, or "hf://owner/name"
    big = upscaler(Image.open("photo.jpg"))                   # PIL in, PIL out (an array or tensor alike)
    upscaler.upscale_file("photo.jpg", "photo_x4.png")        # metadata, alpha and bit depth kept

Every option of `resshift upscale` that concerns the image is a keyword here with the same default, and
the same options give the same pixels as the command line. The CLI itself is a thin layer over this module.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

import numpy as np
import torch
from torch import Tensor

from resshift_cli import __version__, registry
from resshift_cli.cache import resolve_model
from resshift_cli.colorfix import COLOR_FIXES, ColorFix
from resshift_cli.devices import (
    configure_threads,
    precision_label,
    resolve_device,
    resolve_precision,
    resolve_winograd,
)
from resshift_cli.errors import ImageError, UsageError
from resshift_cli.images import (
    DEFAULT_MAX_PIXELS,
    Picture,
    array_from_picture,
    check_bit_depth,
    format_for,
    model_rgb,
    picture_from_array,
    read_picture,
    resize_picture,
    same_file,
    with_pixels,
    write_picture,
)
from resshift_cli.loading import LoadedModel, load_model
from resshift_cli.pipeline import (
    DEFAULT_OPTIONS,
    DEFAULT_SEED,
    DEFAULT_TILE,
    DEFAULT_TILE_BATCH,
    UpscaleOptions,
    check_tiling,
    schedule_for,
)
from resshift_cli.progress import Progress, ProgressCallback
from resshift_cli.runner import Notice, Runtime, upscale_tensor

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["Provenance", "Result", "Upscaler"]

ImageLike = TypeVar("ImageLike", "Image.Image", np.ndarray, Tensor)

_PIL_LABEL = "<PIL image>"
_PNG_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "I;16"})
"""PIL modes that go through PNG unchanged; other modes (CMYK, F, I, ...) go through TIFF."""
_ARRAY_LABEL = "<array>"
_TENSOR_LABEL = "<tensor>"


@dataclass(frozen=True)
class Provenance:
    """How an output was made; written into the file (PNG text, EXIF Software) and into JSON records."""

    model: str
    seed: int
    scale: float
    tiling: str
    precision: str
    device: str
    version: str = __version__
    steps: int | None = None
    """Sampling steps taken (the model's trained steps unless --steps); None where unknown."""
    color_fix: str = "none"

    def text(self) -> dict[str, str]:
        """PNG text chunks; "Software" also becomes the EXIF Software tag of every format."""
        return {
            "Software": f"resshift-cli {self.version}",
            **{
                f"resshift:{k}": f"{v:g}" if isinstance(v, float) else str(v)
                for k, v in self.fields().items()
                if k != "version"
            },
        }

    def fields(self) -> dict[str, str | int | float]:
        return {
            "model": self.model,
            "seed": self.seed,
            "scale": self.scale,
            "tiling": self.tiling,
            "precision": self.precision,
            "device": self.device,
            "version": self.version,
            **({"steps": self.steps} if self.steps is not None else {}),
            "color_fix": self.color_fix,
        }


@dataclass(frozen=True)
class Result:
    """What `Upscaler.upscale_file` wrote: where, its size in pixels, how long it took and how it was made."""

    source: Path
    target: Path
    fmt: str
    width: int
    height: int
    seconds: float
    provenance: Provenance


def describe_tiling(options: UpscaleOptions) -> str:
    """ "none" | "tile 256, overlap 32" | "official, tile 256, overlap 64" (the tile is the largest side)."""
    if options.tile == 0:
        return "none"
    tiles = f"tile {options.tile}, overlap {options.overlap}"
    return f"official, {tiles}" if options.official_tiling else tiles


def passes_for(scale: float, model_scale: int) -> int:
    """How many model passes reach `scale`: the fewest n with model_scale**n >= scale (at least 1)."""
    return max(1, math.ceil(math.log(scale, model_scale) - 1e-9))


def _pass_progress(progress: ProgressCallback | None, index: int, passes: int) -> ProgressCallback | None:
    if progress is None or passes == 1:
        return progress
    return lambda p: progress(Progress(f"pass {index + 1}/{passes} {p.stage}", p.done, p.total))


def upscale_picture(
    model: LoadedModel | Runtime,
    picture: Picture,
    options: UpscaleOptions = DEFAULT_OPTIONS,
    progress: ProgressCallback | None = None,
    notice: Notice | None = None,
) -> Picture:
    """One model pass (×scale) over a decoded picture; alpha, grayscale and metadata are carried over."""
    lr = torch.from_numpy(model_rgb(picture)).permute(2, 0, 1).unsqueeze(0)
    sr = upscale_tensor(model, lr, options, progress, notice)
    return with_pixels(picture, sr[0].permute(1, 2, 0).cpu().numpy())


def upscale_to_scale(
    model: LoadedModel | Runtime,
    picture: Picture,
    scale: float,
    options: UpscaleOptions,
    progress: ProgressCallback | None = None,
    notice: Notice | None = None,
) -> Picture:
    """The picture `scale` times larger: model passes (×model.scale each), then a Lanczos/area resize to
    round(scale·H) × round(scale·W) when the passes did not land on it exactly. `notice` hears about
    the retries (out of memory, non-finite values)."""
    height, width = max(1, round(picture.height * scale)), max(1, round(picture.width * scale))
    passes = passes_for(scale, model.scale)
    result = picture
    for index in range(passes):
        result = upscale_picture(model, result, options, _pass_progress(progress, index, passes), notice)
    if (result.height, result.width) != (height, width):
        result = resize_picture(result, height, width)
    return result


def write_output(
    picture: Picture,
    target: Path,
    fmt: str,
    quality: int,
    bit_depth: int | None,
    provenance: Provenance,
) -> None:
    """Write an upscaled picture atomically with its provenance, creating the folder; ImageError naming
    the file on failure (the input is never overwritten: `write_picture` refuses)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ImageError(f"{target.parent}: cannot create the output folder ({err.strerror or err})") from err
    write_picture(picture, target, fmt, quality, bit_depth, provenance.text())


class Upscaler:
    """A model on a device, ready to upscale PIL images, NumPy arrays, tensors and files.

    Build it with `from_pretrained` (or around a `loading.LoadedModel`); it keeps the networks, the
    precision and (with `compile=True`) the compiled denoiser for every later call. Not thread-safe: use
    one per thread or process.
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        precision: str | torch.dtype = "auto",
        compile: bool = False,
    ) -> None:
        """Wrap a loaded model (already on its device); precision: "auto", "fp32", "fp16", "bf16", a dtype.
        "auto" also turns on Winograd convolutions on CPUs (`devices.resolve_winograd`)."""
        self.runtime = Runtime(model)
        self.dtype = (
            precision if isinstance(precision, torch.dtype) else resolve_precision(precision, model.device)
        )
        self.winograd = resolve_winograd(precision, model.device)
        self.runtime.compile(compile)

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path = registry.DEFAULT_MODEL,
        *,
        device: str | torch.device = "auto",
        precision: str | torch.dtype = "auto",
        compile: bool = False,
        progress: ProgressCallback | None = None,
    ) -> Upscaler:
        """Load a registry name ("realsr-v3"), a model folder or "hf://owner/name[@revision]".

        Downloads on first use into the cache (`resshift models` manages it); `progress` hears about the
        download ("download"/"wait" stages). device: "auto" (CUDA, then MPS, then CPU), "cpu", "cuda:1",
        ... precision: "auto" picks bf16/fp16 on CUDA, bf16 on CPUs that compute it natively, else fp32.
        compile: run the denoiser through torch.compile (falls back to eager mode if that fails).
        """
        where = device if isinstance(device, torch.device) else resolve_device(device)
        if not isinstance(precision, torch.dtype):
            resolve_precision(precision, where)  # an unknown name fails before any download
        folder = resolve_model(str(model), progress=progress)
        configure_threads()
        return cls(load_model(folder, where), precision=precision, compile=compile)

    @property
    def model(self) -> LoadedModel:
        """The loaded model (config, networks, folder)."""
        return self.runtime.model

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def scale(self) -> int:
        """Output side / input side of one model pass (4)."""
        return self.runtime.scale

    def options(
        self,
        *,
        seed: int = DEFAULT_SEED,
        tile: int = DEFAULT_TILE,
        tile_overlap: int | None = None,
        tile_batch: int = DEFAULT_TILE_BATCH,
        official_tiling: bool = False,
        steps: int | None = None,
        color_fix: ColorFix = "none",
    ) -> UpscaleOptions:
        """Checked options in this upscaler's precision (UsageError for a tile that is not a multiple of
        the model's size multiple, an overlap that does not fit the tile, steps out of range)."""
        check_tiling(tile, tile_overlap, self.runtime.size_multiple)
        if color_fix not in COLOR_FIXES:
            raise UsageError(f"unknown color_fix {color_fix!r}; use one of {', '.join(COLOR_FIXES)}")
        options = UpscaleOptions(
            seed,
            self.dtype,
            tile,
            tile_overlap,
            tile_batch,
            official_tiling,
            steps,
            color_fix,
            winograd=self.winograd,
        )
        schedule_for(self.runtime, options)
        return options

    def provenance(self, options: UpscaleOptions, scale: float) -> Provenance:
        """What is written into outputs made with `options` at `scale`."""
        return Provenance(
            model=self.model.name,
            seed=options.seed,
            scale=scale,
            tiling=describe_tiling(options),
            precision=precision_label(options.dtype, options.winograd),
            device=self.device.type,
            steps=schedule_for(self.runtime, options).steps,
            color_fix=options.color_fix,
        )

    def upscale_picture(
        self,
        picture: Picture,
        options: UpscaleOptions,
        scale: float | None = None,
        progress: ProgressCallback | None = None,
        notice: Notice | None = None,
    ) -> Picture:
        """A decoded picture `scale` (default: the model's) times larger; see `upscale_to_scale`."""
        scale = float(self.scale) if scale is None else _checked_scale(scale)
        return upscale_to_scale(self.runtime, picture, scale, options, progress, notice)

    @overload
    def __call__(self, image: Image.Image, **kwargs: Any) -> Image.Image: ...
    @overload
    def __call__(self, image: np.ndarray, **kwargs: Any) -> np.ndarray: ...
    @overload
    def __call__(self, image: Tensor, **kwargs: Any) -> Tensor: ...

    def __call__(
        self,
        image: ImageLike,
        *,
        scale: float | None = None,
        seed: int = DEFAULT_SEED,
        tile: int = DEFAULT_TILE,
        tile_overlap: int | None = None,
        tile_batch: int = DEFAULT_TILE_BATCH,
        official_tiling: bool = False,
        steps: int | None = None,
        color_fix: ColorFix = "none",
        progress: ProgressCallback | None = None,
        notice: Notice | None = None,
    ) -> ImageLike:
        """Upscale an image and return it in the same form.

        image: a PIL image (mode kept where PNG holds it: 1/L/LA/I;16 stay gray, RGBA keeps alpha; palette
            images come back RGB or RGBA), a NumPy array (H, W) or (H, W, C), C = 1 gray, 2 gray + alpha,
            3 RGB, 4 RGBA, uint8/uint16 or float in [0, 1] (same dtype back), or a tensor (3, H, W) or
            (1, 3, H, W) in [0, 1] (same shape, dtype and device back).
        scale: output size / input size, 1..16 (default: the model's ×4). The other options are those of
            `resshift upscale`: seed, tile (LR pixels, a multiple of 64, 0 = untiled), tile_overlap (None =
            automatic), tile_batch (0 = per device), official_tiling, steps (None = trained),
            color_fix ("none", "wavelet", "adain").
        progress: called with `Progress(stage, done, total)` as the image advances.
        notice: told, in one line, about retries (out of memory → smaller tiles, non-finite → float32).
        """
        options = self.options(
            seed=seed,
            tile=tile,
            tile_overlap=tile_overlap,
            tile_batch=tile_batch,
            official_tiling=official_tiling,
            steps=steps,
            color_fix=color_fix,
        )

        def run(picture: Picture) -> Picture:
            return self.upscale_picture(picture, options, scale, progress, notice)

        if isinstance(image, np.ndarray):
            picture, layout = picture_from_array(image, _ARRAY_LABEL)
            return array_from_picture(run(picture), layout)
        if isinstance(image, Tensor):
            return _upscale_tensor_image(image, run)
        if _is_pil(image):
            return _upscale_pil(image, run)
        raise UsageError(
            f"cannot upscale a {type(image).__name__}; pass a PIL image, a NumPy array or a torch tensor"
        )

    def upscale_file(
        self,
        src: str | Path,
        dst: str | Path,
        *,
        fmt: str | None = None,
        quality: int = 95,
        bit_depth: int | None = None,
        overwrite: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        scale: float | None = None,
        seed: int = DEFAULT_SEED,
        tile: int = DEFAULT_TILE,
        tile_overlap: int | None = None,
        tile_batch: int = DEFAULT_TILE_BATCH,
        official_tiling: bool = False,
        steps: int | None = None,
        color_fix: ColorFix = "none",
        progress: ProgressCallback | None = None,
        notice: Notice | None = None,
    ) -> Result:
        """Read `src`, upscale it and write `dst` atomically (no partial file on failure).

        fmt: "png" | "jpg" | "webp" | "tiff", default from `dst`'s suffix. quality: 1..100 for jpg/webp.
        bit_depth: 8 or 16 (16 needs png or tiff); None keeps the input's depth where the format holds it.
        EXIF (orientation applied), ICC, XMP, text, DPI and alpha are kept; the provenance is written in.
        An existing `dst` is an ImageError unless `overwrite`; `dst` may never be `src`. The other options
        are those of `__call__`.
        """
        started = time.perf_counter()
        source, target = Path(src), Path(dst)
        written = format_for(target, fmt)
        check_bit_depth(written, bit_depth, str(target), "bit_depth=16")
        _check_target(source, target, overwrite)
        options = self.options(
            seed=seed,
            tile=tile,
            tile_overlap=tile_overlap,
            tile_batch=tile_batch,
            official_tiling=official_tiling,
            steps=steps,
            color_fix=color_fix,
        )
        scale = float(self.scale) if scale is None else _checked_scale(scale)
        result = self.upscale_picture(
            read_picture(source, max_pixels=max_pixels), options, scale, progress, notice
        )
        made = self.provenance(options, scale)
        write_output(result, target, written, quality, bit_depth, made)
        seconds = time.perf_counter() - started
        return Result(source, target, written, result.width, result.height, seconds, made)


def _checked_scale(scale: float) -> float:
    if not 1 <= scale <= 16:
        raise UsageError(f"scale must be between 1 and 16, got {scale:g}")
    return float(scale)


def _check_target(source: Path, target: Path, overwrite: bool) -> None:
    """Refuse, before any work, to replace the input or (unless `overwrite`) an existing file."""
    if same_file(source, target):
        raise ImageError(f"{target}: is the input file; choose another output path")
    if not overwrite and (target.exists() or target.is_symlink()):
        raise ImageError(f"{target}: already exists; pass overwrite=True to replace it")


def _is_pil(image: object) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        return False
    return isinstance(image, Image.Image)


def _upscale_pil(image: Image.Image, run: Callable[[Picture], Picture]) -> Image.Image:
    """Through lossless bytes in memory (PNG, or TIFF for modes PNG cannot hold), so a PIL image is read
    exactly as that file would be; the result comes back decoded from a PNG (its ICC/EXIF kept)."""
    from PIL import Image

    buffer = io.BytesIO()
    extras = {k: image.info[k] for k in ("icc_profile", "exif", "dpi") if image.info.get(k)}
    try:
        image.save(buffer, format="PNG" if image.mode in _PNG_MODES else "TIFF", **extras)
    except (OSError, ValueError, KeyError) as err:
        raise ImageError(f"{_PIL_LABEL}: cannot read mode {image.mode} ({err})") from err
    result = run(read_picture(buffer.getvalue(), name=_PIL_LABEL))
    out = io.BytesIO()
    write_picture(result, out, "png")
    out.seek(0)
    with Image.open(out) as decoded:
        decoded.load()
        return decoded.copy()


def _upscale_tensor_image(image: Tensor, run: Callable[[Picture], Picture]) -> Tensor:
    """(3, H, W) or (1, 3, H, W) in [0, 1] → the same layout, dtype and device, ×scale."""
    if image.dim() not in (3, 4) or image.shape[-3] != 3 or (image.dim() == 4 and image.shape[0] != 1):
        raise UsageError(
            f"{_TENSOR_LABEL}: expected a (3, H, W) or (1, 3, H, W) tensor, got {tuple(image.shape)}"
        )
    if not image.is_floating_point():
        raise UsageError(f"{_TENSOR_LABEL}: expected floats in [0, 1], got {image.dtype}")
    rgb = image.reshape(3, *image.shape[-2:]).permute(1, 2, 0).detach().float().cpu().numpy()
    picture, layout = picture_from_array(rgb, _TENSOR_LABEL)
    out = torch.from_numpy(array_from_picture(run(picture), layout)).permute(2, 0, 1)
    return out.reshape(*image.shape[:-2], *out.shape[-2:]).to(image.device, image.dtype)
