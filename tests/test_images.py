"""Reading and writing pictures without loss, over the generated corpus in tests/corpus.py."""

from __future__ import annotations

import io
import os
import stat
import struct
from dataclasses import fields, replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms, ImageFile, ImageOps, PngImagePlugin

import corpus
from resshift_cli.errors import ImageError, UsageError
from resshift_cli.images import (
    DEFAULT_MAX_PIXELS,
    FORMATS,
    Metadata,
    Picture,
    format_for,
    model_rgb,
    read_picture,
    resize_picture,
    same_file,
    upscale_alpha,
    with_pixels,
    write_picture,
)

METADATA_FIELDS = [f.name for f in fields(Metadata)]
PROVENANCE = {"software": "resshift-cli test", "model": "realsr-v3", "seed": "42"}


def as_int(values: np.ndarray, depth: int) -> np.ndarray:
    """Float samples in [0, 1] -> the integers they encode at `depth` bits."""
    return np.rint(values.astype(np.float64) * (2**depth - 1)).astype(np.int64)


def expected_rgb(samples: np.ndarray) -> np.ndarray:
    """(H, W, C) stored samples -> (H, W, 3) colour as a Picture holds it (gray replicated)."""
    colour = samples[..., :1] if samples.shape[2] <= 2 else samples[..., :3]
    return np.repeat(colour, 3, axis=2) if colour.shape[2] == 1 else colour


def exif_of(image: Image.Image) -> Image.Exif:
    """EXIF of an opened image."""
    return image.getexif()


def parsed_exif(data: bytes | None) -> Image.Exif:
    """EXIF bytes parsed by Pillow."""
    exif = Image.Exif()
    exif.load(data or b"")
    return exif


def decoded(path: Path) -> Image.Image:
    """The file as Pillow decodes it (pixels, mode, info and EXIF), with the file closed again."""
    with Image.open(path) as image:
        return image.copy()


def random_picture(channels: int, depth: int, **fields: object) -> Picture:
    """A Picture holding corpus samples (C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) at `depth` bits;
    `fields` are Picture or Metadata fields."""
    samples = corpus.sample_pixels(channels, depth).astype(np.float32) / (2**depth - 1)
    alpha = samples[..., -1] if channels in (2, 4) else None
    metadata = {name: fields.pop(name) for name in METADATA_FIELDS if name in fields}
    return Picture(
        rgb=np.ascontiguousarray(expected_rgb(samples)),
        alpha=alpha,
        grayscale=channels <= 2,
        bit_depth=depth,
        metadata=Metadata(**metadata),
        **fields,
    )


# ------------------------------------------------------------------------------------------- reading


@pytest.mark.parametrize("container", ["png", "tiff"])
@pytest.mark.parametrize("depth", [8, 16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_lossless_inputs_are_read_exactly(tmp_path, container, depth, channels):
    samples = corpus.sample_pixels(channels, depth)
    if container == "tiff" and channels == 2 and depth == 16:
        pytest.skip("neither Pillow nor OpenCV reads 16-bit gray+alpha TIFF (see the refusal test)")
    if container == "png":
        path = corpus.write_png(tmp_path, "in.png", samples)
    else:
        path = corpus.write_tiff(tmp_path, "in.tif", samples)
    picture = read_picture(path)
    assert picture.rgb.dtype == np.float32 and picture.rgb.shape == (corpus.HEIGHT, corpus.WIDTH, 3)
    np.testing.assert_array_equal(as_int(picture.rgb, depth), expected_rgb(samples))
    if channels in (2, 4):
        np.testing.assert_array_equal(as_int(picture.alpha, depth), samples[..., -1])
    else:
        assert picture.alpha is None
    assert (picture.grayscale, picture.bit_depth) == (channels <= 2, depth)
    assert picture.format == {"png": "PNG", "tiff": "TIFF"}[container]


def test_sixteen_bit_values_keep_full_precision(tmp_path):
    samples = np.array([[[0, 1, 257], [65534, 65535, 32768]]], dtype=np.uint16)
    picture = read_picture(corpus.write_png(tmp_path, "deep.png", samples))
    assert picture.rgb[0, 0, 1] == pytest.approx(1 / 65535)
    assert picture.rgb[0, 1, 0] == pytest.approx(65534 / 65535)
    np.testing.assert_array_equal(as_int(picture.rgb, 16), samples)


def test_sixteen_bit_gray_alpha_tiff_is_refused_clearly(tmp_path):
    path = corpus.write_tiff(tmp_path, "la16.tif", corpus.sample_pixels(2, 16))
    with pytest.raises(ImageError, match=r"la16\.tif: unsupported TIFF layout"):
        read_picture(path)


def test_palette_with_transparency_becomes_rgba(tmp_path):
    picture = read_picture(corpus.write_palette_png(tmp_path))
    indices = np.asarray(corpus.palette_image())
    assert picture.alpha is not None and not picture.grayscale
    np.testing.assert_array_equal(picture.alpha == 0, indices == 3)
    np.testing.assert_array_equal(picture.alpha[indices != 3], 1.0)
    np.testing.assert_array_equal(as_int(picture.rgb[indices == 2], 8), [[10, 20, 30]] * (indices == 2).sum())


def test_single_frame_gif_with_transparency_reads(tmp_path):
    picture = read_picture(corpus.write_palette_gif(tmp_path))
    assert picture.format == "GIF"
    np.testing.assert_array_equal(picture.alpha == 0, np.asarray(corpus.palette_image()) == 3)


@pytest.mark.parametrize(("channels", "depth"), [(1, 8), (1, 16), (3, 8), (3, 16)])
def test_colour_key_transparency_becomes_alpha(tmp_path, channels, depth):
    path, key = corpus.write_colour_key_png(tmp_path, channels, depth)
    picture = read_picture(path)
    samples = corpus.sample_pixels(channels, depth)
    keyed = (samples == np.array(key)).all(axis=2)
    assert picture.bit_depth == depth and picture.grayscale == (channels == 1)
    np.testing.assert_array_equal(picture.alpha == 0, keyed)
    np.testing.assert_array_equal(picture.alpha[~keyed], 1.0)


def test_bilevel_image_reads_as_8_bit_gray(tmp_path):
    picture = read_picture(corpus.write_bilevel_png(tmp_path))
    board = np.indices((corpus.HEIGHT, corpus.WIDTH)).sum(axis=0) % 2
    assert (picture.grayscale, picture.bit_depth) == (True, 8)
    np.testing.assert_array_equal(picture.rgb[..., 0], board.astype(np.float32))


def test_cmyk_jpeg_without_profile_uses_pillows_formula(tmp_path):
    path = corpus.write_cmyk_jpeg(tmp_path)
    picture = read_picture(path)
    reference = np.asarray(decoded(path).convert("RGB"))
    np.testing.assert_array_equal(as_int(picture.rgb, 8), reference)
    assert picture.metadata.icc_profile is None
    assert np.abs(reference[0, 0].astype(int) - [255, 0, 0]).max() <= 2


def test_cmyk_jpeg_is_converted_through_its_profile_which_is_then_dropped(tmp_path):
    path = corpus.write_cmyk_jpeg(tmp_path, icc=corpus.cmyk_icc())
    picture = read_picture(path)
    source = decoded(path)
    profile = ImageCms.ImageCmsProfile(io.BytesIO(source.info["icc_profile"]))
    srgb = ImageCms.createProfile("sRGB")
    reference = np.asarray(ImageCms.profileToProfile(source, profile, srgb, outputMode="RGB"))
    np.testing.assert_array_equal(as_int(picture.rgb, 8), reference)
    assert np.ptp(reference[0, 0]) <= 1, "the test profile maps every ink mix to a gray"
    assert picture.metadata.icc_profile is None


def test_cmyk_jpeg_with_unusable_profile_falls_back(tmp_path):
    fake = b"\0" * 16 + b"CMYK" + b"\0" * 200
    picture = read_picture(corpus.write_cmyk_jpeg(tmp_path, icc=fake))
    assert np.abs(as_int(picture.rgb[0, 0], 8) - [255, 0, 0]).max() <= 2
    assert picture.metadata.icc_profile is None


def test_float_tiff_in_unit_range_is_read(tmp_path):
    picture = read_picture(corpus.write_float_tiff(tmp_path))
    assert (picture.grayscale, picture.bit_depth) == (True, 16)
    assert picture.rgb.min() == 0.0 and picture.rgb.max() == 1.0


def test_float_tiff_out_of_range_is_refused(tmp_path):
    with pytest.raises(ImageError, match=r"float samples outside \[0, 1\] \(-0\.5\.\.2"):
        read_picture(corpus.write_float_tiff(tmp_path, -0.5, 2.0))


def test_int32_tiff_within_16_bits_is_read_and_beyond_is_refused(tmp_path):
    picture = read_picture(corpus.write_int32_tiff(tmp_path, 65535))
    assert picture.bit_depth == 16 and as_int(picture.rgb, 16).max() == 65535
    with pytest.raises(ImageError, match=r"0\.\.70000\) do not fit 16 bits"):
        read_picture(corpus.write_int32_tiff(tmp_path, 70000))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("writer", [corpus.write_oriented_png, corpus.write_oriented_tiff])
@pytest.mark.parametrize("depth", [8, 16])
def test_exif_orientation_is_applied_like_pillow(tmp_path, writer, orientation, depth):
    picture = read_picture(writer(tmp_path, orientation, depth))
    stored = corpus.sample_pixels(3, depth)
    # Pillow's exif_transpose applied to an image of pixel indices tells where each pixel must go
    indices = Image.fromarray(
        np.arange(stored.shape[0] * stored.shape[1], dtype=np.int32).reshape(stored.shape[:2])
    )
    indices.getexif()[0x0112] = orientation
    moved = np.asarray(ImageOps.exif_transpose(indices))
    np.testing.assert_array_equal(as_int(picture.rgb, depth), stored.reshape(-1, 3)[moved])
    assert parsed_exif(picture.metadata.exif).get(0x0112, 1) == 1


def test_orientation_of_big_endian_and_bigtiff_files(tmp_path):
    samples = corpus.sample_pixels(3, 16)
    motorola = tmp_path / "mm.tif"
    motorola.write_bytes(corpus.tiff_bytes(samples, {274: 6}, big_endian=True))
    bigtiff = tmp_path / "big.tif"
    Image.fromarray(corpus.sample_pixels(3, 8)).save(bigtiff, big_tiff=True, tiffinfo={274: 8})
    np.testing.assert_array_equal(as_int(read_picture(motorola).rgb, 16), np.rot90(samples, k=-1))
    np.testing.assert_array_equal(as_int(read_picture(bigtiff).rgb, 8), np.rot90(corpus.sample_pixels(3, 8)))


def test_jpeg_orientation_and_xmp_orientation_are_reset(tmp_path):
    path = tmp_path / "o6.jpg"
    Image.fromarray(corpus.sample_pixels(3, 8)).save(
        path, exif=corpus.sample_exif(6), xmp=corpus.sample_xmp(6), dpi=(300, 150)
    )
    picture = read_picture(path)
    assert picture.rgb.shape == (corpus.WIDTH, corpus.HEIGHT, 3)
    assert picture.metadata.dpi == (150.0, 300.0), "a quarter turn swaps the horizontal and vertical density"
    assert parsed_exif(picture.metadata.exif)[0x0112] == 1
    assert (
        b'tiff:Orientation="1"' in picture.metadata.xmp
        and b'tiff:Orientation="6"' not in picture.metadata.xmp
    )


def test_xmp_only_orientation_is_applied(tmp_path):
    path = corpus.write_png(tmp_path, "x8.png", corpus.sample_pixels(3, 8), xmp=corpus.sample_xmp(8))
    picture = read_picture(path)
    assert picture.rgb.shape == (corpus.WIDTH, corpus.HEIGHT, 3)
    np.testing.assert_array_equal(as_int(picture.rgb, 8), np.rot90(corpus.sample_pixels(3, 8)))


def test_metadata_is_read_and_exif_thumbnail_dropped(tmp_path):
    exif = corpus.sample_exif(3, thumbnail=True)
    assert parsed_exif(exif).get_ifd(ExifTags.IFD.IFD1), "corpus EXIF must carry a thumbnail"
    icc = corpus.srgb_icc()
    path = corpus.write_png(
        tmp_path, "meta.png", corpus.sample_pixels(3, 8), exif, icc, corpus.sample_xmp(), {"Title": "dune"}
    )
    picture = read_picture(path)
    read = parsed_exif(picture.metadata.exif)
    assert picture.metadata.icc_profile == icc
    assert b"<rdf:li>Ada</rdf:li>" in picture.metadata.xmp
    assert picture.metadata.text == {"Title": "dune"}
    assert (read[0x010F], read[0x0110], read[0x0112]) == ("Canon", "EOS Test", 1)
    assert read.get_ifd(ExifTags.IFD.IFD1) == {}
    assert b"\xff\xd8" not in picture.metadata.exif, "the thumbnail JPEG must be gone"


def test_icc_profile_that_does_not_match_the_pixels_is_dropped(tmp_path):
    path = corpus.write_png(tmp_path, "gray.png", corpus.sample_pixels(1, 8), icc=corpus.srgb_icc())
    assert read_picture(path).metadata.icc_profile is None


def test_jpeg_comment_and_dpi_are_read(tmp_path):
    path = tmp_path / "c.jpg"
    Image.fromarray(corpus.sample_pixels(3, 8)).save(path, comment="hello", dpi=(300, 150))
    picture = read_picture(path)
    assert picture.metadata.text == {"Comment": "hello"} and picture.metadata.dpi == (300.0, 150.0)


def test_mpo_and_tiff_with_preview_page_read_as_their_first_image(tmp_path):
    mpo = read_picture(corpus.write_mpo(tmp_path))
    assert mpo.format == "JPEG"
    np.testing.assert_array_equal(as_int(mpo.rgb, 8), np.asarray(decoded(tmp_path / "camera.mpo")))
    assert as_int(mpo.rgb, 8).std() > 40, "the detailed first frame, not the flat preview"
    tiff = read_picture(corpus.write_tiff_with_preview(tmp_path))
    np.testing.assert_array_equal(as_int(tiff.rgb, 8), corpus.sample_pixels(3, 8))


@pytest.mark.parametrize(
    "writer",
    [corpus.write_animated_gif, corpus.write_apng, corpus.write_animated_webp, corpus.write_multipage_tiff],
)
def test_multi_frame_inputs_are_refused(tmp_path, writer):
    path = writer(tmp_path)
    with pytest.raises(ImageError, match=r"animated or multi-page image \(3 frames\)") as caught:
        read_picture(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_png_named_jpg_is_read_by_content(tmp_path):
    path = corpus.write_png(tmp_path, "liar.jpg", corpus.sample_pixels(3, 8))
    picture = read_picture(path)
    assert picture.format == "PNG"
    np.testing.assert_array_equal(as_int(picture.rgb, 8), corpus.sample_pixels(3, 8))


def test_stdin_bytes_are_read_and_named_in_errors(tmp_path):
    data = corpus.write_png(tmp_path, "a.png", corpus.sample_pixels(4, 16)).read_bytes()
    picture = read_picture(data)
    assert picture.source is None and picture.bit_depth == 16
    with pytest.raises(ImageError, match=r"^<stdin>: not an image"):
        read_picture(b"hello")
    with pytest.raises(ImageError, match=r"^pipe: empty file"):
        read_picture(b"", name="pipe")


def bad_inputs(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, expected message pattern)."""
    good_png = corpus.write_png(folder, "good.png", corpus.sample_pixels(3, 8))
    good_jpg = corpus.write_jpeg(folder, "good.jpg", corpus.sample_pixels(3, 8))
    good_tif = corpus.write_tiff(folder, "good.tif", corpus.sample_pixels(3, 16))
    folder_path = folder / "a folder"
    folder_path.mkdir()
    return {
        "empty": (corpus.write_empty(folder), "empty file"),
        "truncated png": (corpus.write_truncated(folder, good_png), "truncated or corrupt image"),
        "truncated jpeg": (corpus.write_truncated(folder, good_jpg), "truncated or corrupt image"),
        "truncated tiff": (corpus.write_truncated(folder, good_tif), "truncated or corrupt image"),
        "text": (corpus.write_text_file(folder), r"not an image"),
        "missing": (folder / "missing.png", "no such file"),
        "directory": (folder_path, "is a directory"),
        "bomb": (
            corpus.write_bomb_png(folder),
            rf"40000×30000 = 1200000000 pixels exceeds --max-pixels {DEFAULT_MAX_PIXELS}",
        ),
    }


def test_bad_inputs_raise_one_line_errors_naming_the_file(tmp_path):
    for kind, (path, pattern) in bad_inputs(tmp_path).items():
        with pytest.raises(ImageError, match=pattern) as caught:
            read_picture(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and "\n" not in message, kind


def test_permission_denied_is_an_image_error(tmp_path, monkeypatch):
    path = corpus.write_png(tmp_path, "locked.png", corpus.sample_pixels(3, 8))

    def refuse(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(ImageError, match=r"locked\.png: permission denied"):
        read_picture(path)


def test_max_pixels_is_checked_before_decoding(tmp_path):
    path = corpus.write_png(tmp_path, "small.png", corpus.sample_pixels(3, 8))
    limit = corpus.HEIGHT * corpus.WIDTH - 1
    with pytest.raises(ImageError, match=rf"17×12 = 204 pixels exceeds --max-pixels {limit}"):
        read_picture(path, max_pixels=limit)
    assert read_picture(path, max_pixels=limit + 1).width == corpus.WIDTH


def test_pillow_globals_neither_interfere_nor_change(tmp_path, monkeypatch):
    good = corpus.write_png(tmp_path, "good.png", corpus.sample_pixels(3, 8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert read_picture(good).width == corpus.WIDTH
    with pytest.raises(ImageError, match="truncated"):
        read_picture(corpus.write_truncated(tmp_path, good))
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == (10, True)


# ------------------------------------------------------------------------------------------- writing


FORMATS_AND_DEPTHS = [("png", 8), ("png", 16), ("tiff", 8), ("tiff", 16), ("webp", 8), ("jpg", 8)]


@pytest.mark.parametrize(("fmt", "depth"), FORMATS_AND_DEPTHS)
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_round_trip_keeps_values(tmp_path, fmt, depth, channels):
    if fmt == "jpg" and channels in (2, 4):
        pytest.skip("JPEG refuses transparency (tested below)")
    picture = random_picture(channels, depth)
    path = tmp_path / f"out.{fmt}"
    write_picture(picture, path, quality=100)
    back = read_picture(path)
    assert back.bit_depth == depth
    rgba_tiff = fmt == "tiff" and channels == 2 and depth == 16
    assert back.grayscale == (channels <= 2 and fmt != "webp" and not rgba_tiff)
    error = np.abs(as_int(back.rgb, depth) - as_int(picture.rgb, depth))
    if fmt == "jpg":
        assert error.mean() < 2.0
    else:
        assert error.max() == 0
    if channels in (2, 4):
        np.testing.assert_array_equal(as_int(back.alpha, depth), as_int(picture.alpha, depth))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_sixteen_bit_png_and_tiff_are_exact_for_opencv_too(tmp_path, channels):
    picture = random_picture(channels, 16)
    for fmt in ("png", "tiff"):
        path = tmp_path / f"out.{fmt}"
        write_picture(picture, path)
        decoded = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
        decoded = decoded[..., None] if decoded.ndim == 2 else decoded
        decoded = decoded[..., [2, 1, 0, 3][: decoded.shape[2]]] if decoded.shape[2] >= 3 else decoded
        assert decoded.dtype == np.uint16, fmt
        np.testing.assert_array_equal(decoded[..., 0], as_int(picture.rgb[..., 0], 16), err_msg=fmt)
        if channels in (2, 4):
            np.testing.assert_array_equal(decoded[..., -1], as_int(picture.alpha, 16), err_msg=fmt)


def test_png_output_passes_pillows_crc_verification(tmp_path):
    path = tmp_path / "v.png"
    write_picture(random_picture(4, 16, icc_profile=corpus.srgb_icc(), exif=corpus.sample_exif()), path)
    with Image.open(path) as image:
        image.verify()


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp", "tiff"])
def test_metadata_survives_the_round_trip(tmp_path, fmt):
    source = corpus.write_jpeg(
        tmp_path,
        "in.jpg",
        corpus.sample_pixels(3, 8),
        corpus.sample_exif(6, thumbnail=True),
        corpus.srgb_icc(),
        corpus.sample_xmp(6),
    )
    picture = read_picture(source)
    big = with_pixels(picture, np.zeros((picture.height * 2, picture.width * 2, 3), np.float32))
    target = tmp_path / f"out.{fmt}"
    write_picture(big, target)
    back = read_picture(target)
    exif = parsed_exif(back.metadata.exif)
    expected = corpus.sample_exif_tags()
    assert back.metadata.icc_profile == corpus.srgb_icc()
    assert (exif[0x010F], exif[0x0110], exif[0x013B], exif.get(0x0112, 1)) == ("Canon", "EOS Test", "Ada", 1)
    details, gps = exif.get_ifd(ExifTags.IFD.Exif), exif.get_ifd(ExifTags.IFD.GPSInfo)
    assert details[0x9003] == expected["DateTimeOriginal"]
    assert float(details[0x829A]) == pytest.approx(expected["ExposureTime"])
    assert float(details[0x829D]) == pytest.approx(expected["FNumber"])
    assert details[0x8827] == expected["ISOSpeedRatings"]
    assert tuple(float(v) for v in gps[2]) == expected["GPSLatitude"]
    assert (details[0xA002], details[0xA003]) == (big.width, big.height)
    assert exif.get_ifd(ExifTags.IFD.IFD1) == {}
    assert (
        b'tiff:Orientation="1"' in back.metadata.xmp
        and b'exif:PixelXDimension="%d"' % big.width in back.metadata.xmp
    )
    assert back.rgb.shape == (corpus.WIDTH * 2, corpus.HEIGHT * 2, 3), "already upright: no second rotation"


def test_png_text_and_provenance_chunks(tmp_path):
    picture = random_picture(3, 8, text={"parameters": "a cat", "prompt": "猫 on a mat"}, dpi=(300.0, 300.0))
    path = tmp_path / "p.png"
    write_picture(picture, path, text=PROVENANCE)
    with Image.open(path) as image:
        assert image.text == {"parameters": "a cat", "prompt": "猫 on a mat", **PROVENANCE}
        assert image.info["dpi"] == pytest.approx((300, 300), abs=0.01)


@pytest.mark.parametrize("depth", [8, 16])
def test_png_gamma_chromaticities_and_srgb_chunks_are_carried(tmp_path, depth):
    info = PngImagePlugin.PngInfo()
    info.add(b"gAMA", struct.pack(">I", 45455))
    info.add(b"cHRM", struct.pack(">8I", 31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000))
    info.add(b"sRGB", b"\x01")
    source = tmp_path / "in.png"
    pixels = corpus.sample_pixels(3, depth)
    Image.fromarray(pixels[..., 0]).save(source, pnginfo=info)  # gray: 8- and 16-bit both writable
    picture = read_picture(source)
    write_picture(picture, tmp_path / "out.png")
    with Image.open(tmp_path / "out.png") as out:
        assert out.info["gamma"] == 0.45455 and out.info["srgb"] == 1
        assert out.info["chromaticity"] == (0.3127, 0.329, 0.64, 0.33, 0.3, 0.6, 0.15, 0.06)
    with_icc = replace(picture.metadata, icc_profile=corpus.srgb_icc())
    write_picture(replace(picture, grayscale=False, metadata=with_icc), tmp_path / "icc.png")
    with Image.open(tmp_path / "icc.png") as out:
        assert "srgb" not in out.info and out.info["gamma"] == 0.45455  # sRGB and iCCP exclude each other
        assert out.info["icc_profile"]


@pytest.mark.parametrize("fmt", ["jpg", "webp", "tiff"])
def test_provenance_goes_to_exif_software_and_description(tmp_path, fmt):
    path = tmp_path / f"p.{fmt}"
    write_picture(random_picture(3, 8), path, text=PROVENANCE)
    exif = parsed_exif(read_picture(path).metadata.exif)
    assert exif[0x0131] == "resshift-cli test"
    assert exif[0x010E] == "model=realsr-v3; seed=42"


def test_existing_image_description_is_kept(tmp_path):
    picture = random_picture(3, 8, exif=corpus.sample_exif(description="my holiday"))
    path = tmp_path / "p.jpg"
    write_picture(picture, path, text=PROVENANCE)
    exif = decoded(path).getexif()
    assert (exif[0x010E], exif[0x0131]) == ("my holiday", "resshift-cli test")


def test_jpeg_refuses_transparency_but_drops_an_opaque_alpha(tmp_path):
    translucent = random_picture(4, 8)
    with pytest.raises(
        ImageError, match=r"out\.jpg: JPEG cannot store transparency; write png, webp or tiff"
    ):
        write_picture(translucent, tmp_path / "out.jpg")
    assert not (tmp_path / "out.jpg").exists()
    opaque = Picture(translucent.rgb, np.ones(translucent.rgb.shape[:2], np.float32))
    write_picture(opaque, tmp_path / "out.jpg")
    assert decoded(tmp_path / "out.jpg").mode == "RGB"


def test_bit_depth_choice(tmp_path):
    deep = random_picture(3, 16)
    write_picture(deep, tmp_path / "a.png", bit_depth=8)
    assert read_picture(tmp_path / "a.png").bit_depth == 8
    write_picture(random_picture(3, 8), tmp_path / "b.tiff", bit_depth=16)
    assert read_picture(tmp_path / "b.tiff").bit_depth == 16
    write_picture(deep, tmp_path / "c.jpg")
    assert read_picture(tmp_path / "c.jpg").bit_depth == 8
    with pytest.raises(UsageError, match="JPG holds 8 bits per channel"):
        write_picture(deep, tmp_path / "d.jpg", bit_depth=16)
    with pytest.raises(UsageError, match="bit depth must be 8 or 16"):
        write_picture(deep, tmp_path / "e.png", bit_depth=12)


def test_quantisation_rounds_to_nearest_and_clips(tmp_path):
    values = np.array(
        [[[-0.2, 0.5 / 255 + 1e-4, 0.5 / 255 - 1e-4], [1.3, 254.4 / 255, 254.6 / 255]]], np.float32
    )
    write_picture(Picture(values, None), tmp_path / "q.png")
    assert np.asarray(decoded(tmp_path / "q.png")).tolist() == [[[0, 1, 0], [255, 254, 255]]]


def test_webp_size_limit_is_explained(tmp_path):
    wide = Picture(np.zeros((1, 16_384, 3), np.float32), None)
    with pytest.raises(ImageError, match=r"16384×1 is too large for WEBP"):
        write_picture(wide, tmp_path / "w.webp")


def test_quality_is_validated_and_used(tmp_path):
    picture = random_picture(3, 8)
    write_picture(picture, tmp_path / "low.jpg", quality=10)
    write_picture(picture, tmp_path / "high.jpg", quality=100)
    assert (tmp_path / "low.jpg").stat().st_size < (tmp_path / "high.jpg").stat().st_size
    with pytest.raises(UsageError, match="quality must be between 1 and 100"):
        write_picture(picture, tmp_path / "x.jpg", quality=0)


def test_stream_output_defaults_to_png():
    stream = io.BytesIO()
    write_picture(random_picture(3, 8), stream)
    assert stream.getvalue().startswith(b"\x89PNG")
    stream = io.BytesIO()
    write_picture(random_picture(3, 8), stream, fmt="webp")
    assert stream.getvalue()[8:12] == b"WEBP"


def test_format_for():
    assert format_for(Path("a.JPEG"), None) == "jpg"
    assert format_for(Path("a.tif"), None) == "tiff"
    assert format_for(Path("a.png"), "webp") == "webp"
    assert set(FORMATS.values()) == {"png", "jpg", "webp", "tiff"}
    with pytest.raises(UsageError, match=r"a\.bmp: cannot write \.bmp files"):
        format_for(Path("a.bmp"), None)
    with pytest.raises(UsageError, match="no file suffix"):
        format_for(Path("a"), None)
    with pytest.raises(UsageError, match="unknown output format 'gif'"):
        format_for(Path("a.png"), "gif")


# ---------------------------------------------------------------------------------- atomic output


def leftovers(folder: Path) -> list[str]:
    """Temporary files left in a folder."""
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_failed_rename_leaves_no_temporary_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")

    def broken_replace(source, destination):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(ImageError, match=r"out\.png: cannot write \(No space left on device\)"):
        write_picture(random_picture(3, 8), target)
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_interrupt_while_writing_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "out.png"

    def interrupted(descriptor):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_picture(random_picture(3, 8), target)
    assert not target.exists() and leftovers(tmp_path) == []


def test_encoder_failure_touches_nothing(tmp_path):
    target = tmp_path / "out.tiff"
    target.write_bytes(b"old")
    broken = Picture(np.zeros((4, 4, 2), np.float32), None)
    with pytest.raises(ValueError, match="rgb must have shape"):
        write_picture(broken, target)
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_unwritable_folder_is_an_image_error(tmp_path):
    with pytest.raises(ImageError, match=r"cannot write \("):
        write_picture(random_picture(3, 8), tmp_path / "no such folder" / "out.png")


def test_output_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_picture(random_picture(3, 8), tmp_path / "out.png")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.png").stat().st_mode) == 0o644


def test_refuses_to_overwrite_its_input(tmp_path):
    source = corpus.write_png(tmp_path, "photo.png", corpus.sample_pixels(3, 8))
    picture = read_picture(source)
    link = tmp_path / "link.png"
    link.symlink_to(source)
    for target in (source, link, tmp_path / "." / "photo.png"):
        with pytest.raises(ImageError, match="is the input file"):
            write_picture(picture, target)
    assert source.read_bytes() == corpus.png_bytes(corpus.sample_pixels(3, 8))


def test_same_file(tmp_path):
    a = corpus.write_png(tmp_path, "a.png", corpus.sample_pixels(3, 8))
    b = corpus.write_png(tmp_path, "b.png", corpus.sample_pixels(3, 8))
    os.link(a, tmp_path / "hard.png")
    assert same_file(a, tmp_path / "hard.png") and same_file(a, tmp_path / ".." / tmp_path.name / "a.png")
    assert not same_file(a, b) and not same_file(a, tmp_path / "missing.png")


# -------------------------------------------------------------------------------- resize, alpha, pixels


def test_upscale_alpha_keeps_flat_regions_exact_and_stays_in_range():
    alpha = np.zeros((10, 12), np.float32)
    alpha[:, 6:] = 1.0
    big = upscale_alpha(alpha, 40, 48)
    assert big.shape == (40, 48) and big.dtype == np.float32
    assert big.min() >= 0.0 and big.max() <= 1.0
    assert (big[:, :16] == 0).all() and (big[:, 32:] == 1).all()
    assert ((big > 0) & (big < 1)).any(), "the edge itself is smooth"
    for height, width in ((3, 3), (33, 17), (37, 41), (8, 100)):
        assert (upscale_alpha(np.ones((10, 13), np.float32), height, width) == 1).all(), (height, width)
        assert (upscale_alpha(np.zeros((10, 13), np.float32), height, width) == 0).all(), (height, width)


def test_resize_picture_down_and_up_keeps_metadata_and_avoids_dark_fringes():
    rgb = np.zeros((8, 8, 3), np.float32)
    rgb[:, 4:] = 1.0
    alpha = np.zeros((8, 8), np.float32)
    alpha[:, 4:] = 1.0
    picture = Picture(rgb, alpha, metadata=Metadata(exif=corpus.sample_exif(), icc_profile=corpus.srgb_icc()))
    bigger = resize_picture(picture, 32, 32)
    visible = bigger.alpha > 0.01
    assert bigger.rgb[visible].min() > 0.99, "transparent black must not bleed into the white edge"
    assert (
        bigger.metadata.exif == picture.metadata.exif
        and bigger.metadata.icc_profile == picture.metadata.icc_profile
    )
    smaller = resize_picture(Picture(np.full((8, 8, 3), 0.25, np.float32), None), 2, 4)
    assert smaller.rgb.shape == (2, 4, 3) and np.allclose(smaller.rgb, 0.25)


def test_resize_keeps_grayscale_pictures_gray():
    gray = random_picture(1, 8)
    resized = resize_picture(gray, 30, 40)
    assert resized.grayscale and np.array_equal(resized.rgb[..., 0], resized.rgb[..., 2])


def test_with_pixels_restores_alpha_gray_and_metadata():
    original = random_picture(2, 16, exif=corpus.sample_exif(), text={"a": "b"}, source=Path("x.png"))
    result = np.random.default_rng(1).random((original.height * 4, original.width * 4, 3)).astype(np.float32)
    out = with_pixels(original, result)
    assert out.alpha.shape == result.shape[:2]
    np.testing.assert_allclose(out.rgb[..., 0], result @ np.array([0.299, 0.587, 0.114]), atol=1e-6)
    assert np.array_equal(out.rgb[..., 0], out.rgb[..., 1])
    assert (out.metadata.exif, out.metadata.text, out.source, out.bit_depth) == (
        original.metadata.exif,
        {"a": "b"},
        Path("x.png"),
        16,
    )
    with pytest.raises(ValueError, match=r"expected an \(H, W, 3\) array"):
        with_pixels(original, result[..., :2])


@pytest.mark.parametrize("fmt", ["png", "webp", "tiff"])
def test_transparent_pixels_stay_transparent_through_the_pipeline(tmp_path, fmt):
    samples = corpus.sample_pixels(4, 8)
    samples[..., 3] = 255
    samples[:, :8, 3] = 0
    picture = read_picture(corpus.write_png(tmp_path, "in.png", samples))
    out = with_pixels(picture, np.repeat(np.repeat(picture.rgb, 2, axis=0), 2, axis=1))
    write_picture(out, tmp_path / f"out.{fmt}", quality=100)
    alpha = read_picture(tmp_path / f"out.{fmt}").alpha
    assert alpha is not None and alpha.shape == (corpus.HEIGHT * 2, corpus.WIDTH * 2)
    assert (alpha[:, :12] == 0).all() and (alpha[:, 20:] == 1).all()


def test_png_compresses_smooth_images(tmp_path):
    y, x = np.mgrid[0:64, 0:64].astype(np.float32) / 63
    smooth = Picture(np.stack([x, y, (x + y) / 2], axis=2), None)
    write_picture(smooth, tmp_path / "s.png", bit_depth=16)
    assert (tmp_path / "s.png").stat().st_size < 64 * 64 * 3 * 2 / 4


def test_model_sees_the_nearest_visible_colour_under_transparent_pixels():
    generator = np.random.default_rng(3)
    rgb = generator.random((24, 32, 3), dtype=np.float32)
    alpha = (generator.random((24, 32)) < 0.1).astype(np.float32)  # a few visible pixels
    alpha[5, 5] = 0.5  # semi-transparent: visible, keeps its colour
    filled = model_rgb(Picture(rgb, alpha))
    visible = np.argwhere(alpha > 0)
    assert np.array_equal(filled[alpha > 0], rgb[alpha > 0])
    for y, x in np.argwhere(alpha == 0):
        distances = np.hypot(*(visible - (y, x)).T)
        source = np.flatnonzero(np.all(rgb[tuple(visible.T)] == filled[y, x], axis=1))
        assert source.size and np.isclose(distances[source].min(), distances.min(), atol=1e-3)
    assert model_rgb(Picture(rgb, None)) is rgb
    assert model_rgb(Picture(rgb, np.zeros((24, 32), np.float32))) is rgb  # nothing visible to copy
