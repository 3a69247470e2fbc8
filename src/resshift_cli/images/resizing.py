"""Resizing pictures, and the adapters between a Picture and the model's RGB input and output."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from resshift_cli.images.picture import Picture, luma

_ALPHA_SNAP = 1e-6
_VISIBLE = 1.0 / 512.0


def _interpolation(size: tuple[int, int], height: int, width: int, upscale: int) -> int:
    """Area averaging when no side grows, else the given upscaling filter."""
    return cv2.INTER_AREA if height <= size[0] and width <= size[1] else upscale


def _resize(array: np.ndarray, height: int, width: int, upscale: int = cv2.INTER_LANCZOS4) -> np.ndarray:
    """(h, w[, C]) float32 -> (height, width[, C]) float32 (values may overshoot [0, 1])."""
    method = _interpolation(array.shape[:2], height, width, upscale)
    return cv2.resize(np.ascontiguousarray(array, dtype=np.float32), (width, height), interpolation=method)


def upscale_alpha(alpha: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w) alpha in [0, 1] -> (height, width) in [0, 1]: bicubic up (no ringing into flat areas after
    clipping), area down; values within 1e-6 of 0 or 1 snap to exactly 0 or 1."""
    result = _resize(np.asarray(alpha, dtype=np.float32), height, width, cv2.INTER_CUBIC)
    np.clip(result, 0.0, 1.0, out=result)
    result[result < _ALPHA_SNAP] = 0.0
    result[result > 1.0 - _ALPHA_SNAP] = 1.0
    return result


def _resize_rgb(rgb: np.ndarray, alpha: np.ndarray | None, height: int, width: int) -> np.ndarray:
    """(h, w, 3) -> (height, width, 3) in [0, 1]; with alpha, premultiplied so transparent colours
    do not bleed into visible edges (straight resize where the result is nearly transparent)."""
    straight = _resize(rgb, height, width)
    if alpha is not None:
        weight = _resize(alpha, height, width)[..., None]
        premultiplied = _resize(rgb * alpha[..., None], height, width)
        visible = weight > _VISIBLE
        straight = np.where(visible, premultiplied / np.maximum(weight, _VISIBLE), straight)
    return np.clip(straight, 0.0, 1.0, out=straight)


def resize_picture(p: Picture, height: int, width: int) -> Picture:
    """The picture resized to (height, width): Lanczos when growing, area averaging when shrinking;
    alpha through upscale_alpha; metadata kept."""
    if height < 1 or width < 1:
        raise ValueError(f"cannot resize to {width}×{height}")
    rgb = _resize_rgb(p.rgb, p.alpha, height, width)
    if p.grayscale:
        rgb = np.repeat(luma(rgb)[..., None], 3, axis=2)
    alpha = None if p.alpha is None else upscale_alpha(p.alpha, height, width)
    return replace(p, rgb=rgb, alpha=alpha)


def model_rgb(p: Picture) -> np.ndarray:
    """(H, W, 3) float32 colour to feed the model: under fully transparent pixels (alpha 0) the stored
    colour is arbitrary (often black), so it is replaced by that of the nearest visible pixel; otherwise
    the model would spread it into dark or light fringes along the visible edges. Semi-transparent
    pixels keep their colour; a picture without any visible pixel is left as it is."""
    if p.alpha is None:
        return p.rgb
    hidden = p.alpha <= 0.0
    if not hidden.any() or hidden.all():
        return p.rgb
    _, nearest = cv2.distanceTransformWithLabels(
        hidden.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE, labelType=cv2.DIST_LABEL_PIXEL
    )  # nearest[y, x] = k: the k-th visible pixel in raster order (1-based)
    filled = p.rgb.copy()
    filled[hidden] = p.rgb[~hidden][nearest[hidden] - 1]
    return filled


def with_pixels(original: Picture, rgb: np.ndarray) -> Picture:
    """The output picture for the model's (sH, sW, 3) result in [0, 1]: alpha of `original` upscaled and
    reattached, grayscale restored (luma in all channels), metadata and source carried over."""
    rgb = np.ascontiguousarray(rgb, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) array, got shape {rgb.shape}")
    height, width = rgb.shape[:2]
    if original.grayscale:
        rgb = np.repeat(luma(rgb)[..., None], 3, axis=2)
    alpha = None if original.alpha is None else upscale_alpha(original.alpha, height, width)
    return replace(original, rgb=rgb, alpha=alpha)
