"""Tests for deepfake_detector.media.image: every input kind, format, mode and failure."""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake_detector.errors import (
    CorruptMediaError,
    DeepfakeDetectorError,
    EmptyFileError,
    InvalidArgumentError,
    MediaNotFoundError,
    MediaTooLargeError,
    UnsupportedMediaError,
)
from deepfake_detector.media import (
    encode_jpeg,
    is_image_path,
    launder,
    load_image,
)

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)


def _halves(left: tuple[int, ...], right: tuple[int, ...], mode: str = "RGB") -> Image.Image:
    """An image whose left half is ``left`` and right half is ``right``."""
    width, height = 40, 30
    picture = Image.new(mode, (width, height), left)
    picture.paste(Image.new(mode, (width // 2, height), right), (width // 2, 0))
    return picture


def _save(picture: Image.Image, path: Path, **options) -> Path:
    picture.save(path, **options)
    return path


def _assert_rgb(array: np.ndarray, shape: tuple[int, int]) -> None:
    assert array.shape == (*shape, 3)
    assert array.dtype == np.uint8
    assert array.flags["C_CONTIGUOUS"]


def _close(pixel: np.ndarray, colour: tuple[int, int, int], tolerance: int) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(colour)) <= tolerance))


def _noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk with a correct CRC, so only its content can be at fault."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header announcing ``width`` x ``height`` RGB, with no pixel data at all."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", b"") + _png_chunk(b"IEND", b"")


# --- formats -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "tolerance"),
    [(".jpg", 12), (".png", 0), (".webp", 12), (".bmp", 0), (".tiff", 0), (".gif", 0)],
)
def test_each_format_round_trips(tmp_path: Path, suffix: str, tolerance: int) -> None:
    path = _save(_halves(RED, BLUE), tmp_path / f"pic{suffix}")
    array = load_image(path)
    _assert_rgb(array, (30, 40))
    assert _close(array[15, 5], RED, tolerance)
    assert _close(array[15, 35], BLUE, tolerance)


def test_format_is_decided_by_content_not_suffix(tmp_path: Path) -> None:
    path = _save(_halves(RED, BLUE), tmp_path / "really_a_png.jpg", format="PNG")
    array = load_image(path)
    assert tuple(array[0, 0]) == RED and tuple(array[0, -1]) == BLUE


def test_gif_gives_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    Image.new("RGB", (16, 16), RED).save(
        path, save_all=True, append_images=[Image.new("RGB", (16, 16), GREEN)], duration=100
    )
    with Image.open(path) as check:
        assert check.n_frames == 2
    array = load_image(path)
    _assert_rgb(array, (16, 16))
    assert np.all(array == RED)


@pytest.mark.parametrize(("orientation", "corner"), [(6, (0, -1)), (8, (-1, 0))])
def test_exif_orientation_rotates(tmp_path: Path, orientation: int, corner) -> None:
    picture = Image.new("RGB", (48, 24), BLUE)
    picture.paste(Image.new("RGB", (8, 8), RED), (0, 0))  # red top-left corner as stored
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _save(picture, tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    array = load_image(path)
    _assert_rgb(array, (48, 24))  # width and height swapped
    assert _close(array[corner], RED, 30)
    assert _close(array[-1, -1], BLUE, 30)
    assert np.array_equal(load_image(path.read_bytes()), array)
    with Image.open(path) as handed_in:  # a caller's picture is oriented on a copy, never in place
        assert np.array_equal(load_image(handed_in), array)
        assert handed_in.size == (48, 24) and handed_in.getexif().get(0x0112) == orientation


# EXIF blocks Pillow cannot parse: a TIFF header cut short, and bytes that are no TIFF at all.
BROKEN_EXIF = {
    "truncated": b"MM\x00*\x00\x00",
    "random": np.random.default_rng(3).integers(0, 256, 40, dtype=np.uint8).tobytes(),
}


def _exif_block(entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """A big-endian TIFF header and one IFD of ``(tag, type, count, 4-byte value)`` entries."""
    ifd = b"".join(struct.pack(">HHI", tag, kind, count) + value for tag, kind, count, value in entries)
    return b"MM\x00*" + struct.pack(">IH", 8, len(entries)) + ifd + struct.pack(">I", 0)


def _load_every_way(path: Path) -> list[np.ndarray]:
    """``path`` loaded as a file, as bytes and as a Pillow image, failing on any warning while loading.

    The Pillow image is opened first, with its warnings ignored: opening is the caller's doing.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handed_in = Image.open(path)
    with handed_in, warnings.catch_warnings():
        warnings.simplefilter("error")
        return [load_image(path), load_image(path.read_bytes()), load_image(handed_in)]


@pytest.mark.parametrize("block", BROKEN_EXIF.values(), ids=BROKEN_EXIF.keys())
def test_broken_exif_in_a_png_means_no_orientation(tmp_path: Path, block: bytes) -> None:
    stored = io.BytesIO()
    Image.new("RGB", (64, 48), RED).save(stored, "PNG")
    png = stored.getvalue()
    at = png.index(b"IDAT") - 4
    path = tmp_path / "bad_exif.png"
    path.write_bytes(png[:at] + _png_chunk(b"eXIf", block) + png[at:])
    for array in _load_every_way(path):
        _assert_rgb(array, (48, 64))
        assert np.all(array == RED)


def test_broken_exif_in_a_camera_jpeg_is_quiet(tmp_path: Path) -> None:
    for array in _load_every_way(_camera_jpeg_with_broken_exif(tmp_path)):
        _assert_rgb(array, (48, 64))
        assert _close(array[24, 32], RED, 12)


def _camera_jpeg_with_broken_exif(folder: Path) -> Path:
    """A JPEG without a JFIF segment (as cameras write them), whose EXIF Pillow reads on opening
    and finds cut short."""
    stored = io.BytesIO()
    cut_ifd = b"MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12"  # five entries announced, one begun
    Image.new("RGB", (64, 48), RED).save(stored, "JPEG", exif=b"Exif\x00\x00" + cut_ifd, quality=95)
    jpeg = stored.getvalue()
    assert jpeg[2:4] == b"\xff\xe0"  # the JFIF segment, dropped below
    path = folder / "camera.jpg"
    path.write_bytes(jpeg[:2] + jpeg[4 + int.from_bytes(jpeg[4:6], "big") :])
    return path


def test_reading_in_many_threads_keeps_the_callers_warning_filters(tmp_path: Path) -> None:
    """Decoding threads silence Pillow's warnings while they read; afterwards the filter list is
    the caller's again, in the caller's order, including a filter the caller already had (at
    its end) and one the caller added while they were reading."""
    path = _camera_jpeg_with_broken_exif(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a Pillow warning that got through would fail a read
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin$", append=True)
        before = list(warnings.filters)
        with ThreadPoolExecutor(8) as pool:
            reads = [pool.submit(load_image, path) for _ in range(300)]
            warnings.filterwarnings("ignore", message="added while reading")
            arrays = [read.result() for read in reads]
        assert all(a.shape == (48, 64, 3) for a in arrays)
        ours = ("ignore", re.compile("added while reading", re.IGNORECASE), Warning, None, 0)
        assert warnings.filters == [ours, *before]


def test_orientation_is_applied_when_the_rest_of_the_exif_is_damaged(tmp_path: Path) -> None:
    # A resolution stored as text: readable, but Pillow fails to write such a block back.
    block = _exif_block([(0x0112, 3, 1, struct.pack(">HH", 6, 0)), (0x011A, 2, 4, b"abc\x00")])
    picture = Image.new("RGB", (48, 24), BLUE)
    picture.paste(Image.new("RGB", (8, 8), RED), (0, 0))
    path = _save(picture, tmp_path / "odd_exif.jpg", exif=b"Exif\x00\x00" + block, quality=95)
    for array in _load_every_way(path):
        _assert_rgb(array, (48, 24))
        assert _close(array[0, -1], RED, 30) and _close(array[-1, -1], BLUE, 30)
    with Image.open(path) as handed_in:
        load_image(handed_in)
        assert handed_in.size == (48, 24) and handed_in.getexif().get(0x0112) == 6


# --- transparency --------------------------------------------------------------------------


@pytest.mark.parametrize(("background", "expected"), [(None, WHITE), ((0, 0, 255), BLUE)])
def test_rgba_transparent_half_is_composited(tmp_path: Path, background, expected) -> None:
    picture = _halves((255, 0, 0, 255), (0, 255, 0, 0), mode="RGBA")
    picture.paste(Image.new("RGBA", (4, 30), (0, 0, 0, 128)), (0, 0))  # half-transparent black
    path = _save(picture, tmp_path / "alpha.png")
    options = {} if background is None else {"background": background}
    array = load_image(path, **options)
    _assert_rgb(array, (30, 40))
    assert tuple(array[15, 10]) == RED
    assert tuple(array[15, 30]) == expected  # not the hidden green of a dropped channel
    half = np.array(expected) * (127 / 255)
    assert np.all(np.abs(array[15, 1].astype(float) - half) <= 2)


@pytest.mark.parametrize(("background", "expected"), [(None, WHITE), ((0, 0, 255), BLUE)])
def test_la_transparent_half_is_composited(tmp_path: Path, background, expected) -> None:
    path = _save(_halves((0, 255), (0, 0), mode="LA"), tmp_path / "gray_alpha.png")
    options = {} if background is None else {"background": background}
    array = load_image(path, **options)
    assert tuple(array[15, 10]) == (0, 0, 0)
    assert tuple(array[15, 30]) == expected


@pytest.mark.parametrize("suffix", [".png", ".gif"])
@pytest.mark.parametrize(("background", "expected"), [(None, WHITE), ((0, 0, 255), BLUE)])
def test_palette_transparency_is_composited(tmp_path: Path, suffix, background, expected) -> None:
    picture = _halves((0,), (1,), mode="P")
    picture.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    path = _save(picture, tmp_path / f"palette{suffix}", transparency=1)
    options = {} if background is None else {"background": background}
    array = load_image(path, **options)
    assert tuple(array[15, 10]) == RED
    assert tuple(array[15, 30]) == expected


def test_pa_image_is_composited() -> None:
    picture = Image.new("P", (4, 2), 0)
    picture.putpalette([255, 0, 0] + [0] * 765)
    with_alpha = picture.convert("PA")
    with_alpha.putpixel((3, 1), (0, 0))
    array = load_image(with_alpha, background=(0, 0, 255))
    assert tuple(array[0, 0]) == RED
    assert tuple(array[1, 3]) == BLUE


# --- pixel modes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("picture", "suffix", "expected", "tolerance"),
    [
        (Image.new("L", (8, 8), 77), ".png", (77, 77, 77), 0),
        (Image.new("1", (8, 8), 1), ".png", WHITE, 0),
        (Image.new("CMYK", (16, 16), (0, 255, 255, 0)), ".jpg", RED, 12),
        (Image.new("CMYK", (16, 16), (0, 255, 255, 0)), ".tiff", RED, 0),
    ],
    ids=["gray", "bilevel", "cmyk-jpeg", "cmyk-tiff"],
)
def test_modes_become_rgb(tmp_path: Path, picture, suffix, expected, tolerance) -> None:
    path = _save(picture, tmp_path / f"mode{suffix}")
    array = load_image(path)
    _assert_rgb(array, picture.size[::-1])
    assert _close(array[4, 4], expected, tolerance)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[65535, 32896], [0, 257]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "deep.png")
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    array = load_image(path)
    _assert_rgb(array, (2, 2))
    assert array[:, :, 0].tolist() == [[255, 128], [0, 1]]
    assert np.all(array[:, :, 0] == array[:, :, 2])


def test_float_tiff_is_scaled(tmp_path: Path) -> None:
    values = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    path = _save(Image.fromarray(values), tmp_path / "float.tiff")
    assert load_image(path)[0, :, 1].tolist() == [0, 128, 255]


@pytest.mark.parametrize(
    ("picture", "expected"),
    [
        (Image.fromarray(np.array([[70000, 65535, 32896, -5]], np.int32)), [255, 255, 128, 0]),
        (Image.frombytes("I;16B", (4, 1), bytes.fromhex("ffff 8080 0000 0101")), [255, 128, 0, 1]),
        (Image.fromarray(np.array([[0.0, 0.5, 1.0, 0.25]], np.float32)), [0, 128, 255, 64]),
        (Image.fromarray(np.array([[0.0, 100.0, 300.0, -4.0]], np.float32)), [0, 100, 255, 0]),
    ],
    ids=["I", "I;16B", "F-unit", "F-wide"],
)
def test_integer_and_float_modes(picture: Image.Image, expected: list[int]) -> None:
    array = load_image(picture)
    _assert_rgb(array, (1, 4))
    assert array[0, :, 0].tolist() == expected


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [("HSV", (0, 255, 255), RED), ("YCbCr", (76, 85, 255), RED), ("LAB", (255, 128, 128), WHITE)],
)
def test_colour_spaces_become_rgb(mode: str, value, expected) -> None:
    array = load_image(Image.new(mode, (3, 2), value))
    _assert_rgb(array, (2, 3))
    assert _close(array[1, 2], expected, 3)


# --- input kinds ---------------------------------------------------------------------------


def test_pil_image_input_is_left_usable() -> None:
    picture = _halves(RED, BLUE)
    array = load_image(picture)
    assert tuple(array[0, 0]) == RED and tuple(array[0, -1]) == BLUE
    assert picture.getpixel((0, 0)) == RED  # caller's image still open and unchanged


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_bytes_like_input(kind) -> None:
    buffer = io.BytesIO()
    _halves(RED, BLUE).save(buffer, format="PNG")
    array = load_image(kind(buffer.getvalue()))
    _assert_rgb(array, (30, 40))
    assert tuple(array[0, 0]) == RED


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.full((4, 5), 9, np.uint8), (9, 9, 9)),
        (np.full((4, 5, 1), 9, np.uint8), (9, 9, 9)),
        (np.full((4, 5, 3), (1, 2, 3), np.uint8), (1, 2, 3)),
        (np.full((4, 5, 3), (1, 2, 3), np.uint8)[:, ::-1], (1, 2, 3)),
        (np.full((4, 5, 4), (1, 2, 3, 0), np.uint8), WHITE),
        (np.full((4, 5, 4), (1, 2, 3, 255), np.uint8), (1, 2, 3)),
        (np.ones((4, 5), bool), WHITE),
        (np.full((4, 5, 3), 32896, np.uint16), (128, 128, 128)),
        (np.full((4, 5, 3), (0.0, 0.5, 1.0), np.float64), (0, 128, 255)),
        (np.full((4, 5, 3), (0.0, 100.0, 300.0), np.float32), (0, 100, 255)),
    ],
    ids=[
        "gray",
        "gray1",
        "rgb",
        "rgb-view",
        "rgba-clear",
        "rgba-opaque",
        "bool",
        "uint16",
        "float01",
        "float255",
    ],
)
def test_array_inputs(array: np.ndarray, expected) -> None:
    result = load_image(array)
    _assert_rgb(result, (4, 5))
    assert tuple(result[2, 3]) == expected


def test_background_may_be_a_list() -> None:
    clear = np.zeros((2, 2, 4), np.uint8)
    assert tuple(load_image(clear, background=[0, 0, 255])[0, 0]) == BLUE  # type: ignore[arg-type]


def test_array_result_is_a_copy() -> None:
    source = np.zeros((3, 3, 3), np.uint8)
    load_image(source)[:] = 7
    assert not source.any()


@pytest.mark.parametrize(
    "array",
    [
        np.zeros(5, np.uint8),
        np.zeros((2, 2, 3, 1), np.uint8),
        np.zeros((0, 5, 3), np.uint8),
        np.zeros((4, 0), np.uint8),
        np.zeros((4, 4, 2), np.uint8),
        np.zeros((4, 4, 5), np.uint8),
        np.zeros((4, 4, 3), np.complex64),
        np.zeros((4, 4, 3), np.int64),
        np.zeros((4, 4), object),
    ],
    ids=["1d", "4d", "no-rows", "no-cols", "2ch", "5ch", "complex", "int64", "object"],
)
def test_bad_arrays_are_unsupported(array: np.ndarray) -> None:
    with pytest.raises(UnsupportedMediaError, match=r"^<array>: "):
        load_image(array)
    with pytest.raises(UnsupportedMediaError, match=r"^frame\.png: "):
        load_image(array, name="frame.png")


def test_unknown_source_type_is_unsupported() -> None:
    with pytest.raises(UnsupportedMediaError, match="expected a file path"):
        load_image(42)  # type: ignore[arg-type]


# --- size limits ---------------------------------------------------------------------------


def test_over_limit_image_is_refused(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (100, 100)), tmp_path / "big.png")
    with pytest.raises(MediaTooLargeError) as caught:
        load_image(path, max_pixels=9_999)
    assert str(path) in str(caught.value)
    assert "100x100" in str(caught.value) and "9,999" in str(caught.value)
    assert load_image(path, max_pixels=10_000).shape == (100, 100, 3)
    with pytest.raises(MediaTooLargeError):
        load_image(np.zeros((100, 100, 3), np.uint8), max_pixels=9_999)


def test_size_is_checked_before_decoding() -> None:
    # The header alone says 5000x5000; there are no pixels, so decoding would fail as corrupt.
    with pytest.raises(MediaTooLargeError, match="5000x5000"):
        load_image(_png_header_only(5000, 5000), max_pixels=1_000_000)
    with pytest.raises(CorruptMediaError):
        load_image(_png_header_only(50, 50))


def test_our_limit_decides_not_pillows_warning() -> None:
    # 90 M pixels: over Pillow's warning level, under our default limit. The header-only
    # file then fails as corrupt (no pixel data), without a Pillow warning leaking out.
    assert 10_000 * 9_000 > Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(CorruptMediaError):
            load_image(_png_header_only(10_000, 9_000), name="big.png")
    assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]
    with pytest.raises(MediaTooLargeError, match="over the limit"):
        load_image(_png_header_only(10_001, 10_000), name="big.png")


def test_pillow_decompression_bomb_error_becomes_too_large() -> None:
    with pytest.raises(MediaTooLargeError, match="decompression-bomb"):
        load_image(_png_header_only(20_000, 20_000), max_pixels=10**9, name="bomb.png")


def test_zero_size_is_rejected() -> None:
    with pytest.raises(UnsupportedMediaError, match="^<PIL image>: image has no pixels"):
        load_image(Image.new("RGB", (0, 5)))
    with pytest.raises(UnsupportedMediaError, match="^<bytes>: "):
        load_image(_png_header_only(10, 0))


# --- bad files -----------------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "fmt"), [(".jpg", "JPEG"), (".png", "PNG")])
def test_truncated_image_is_corrupt(tmp_path: Path, suffix: str, fmt: str) -> None:
    buffer = io.BytesIO()
    Image.fromarray(_noise(64, 64)).save(buffer, format=fmt)
    data = buffer.getvalue()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptMediaError) as caught:
        load_image(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert "truncated or damaged" in str(caught.value)


def test_empty_file_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(EmptyFileError, match="empty.png: file is empty"):
        load_image(path)
    for data in (b"", bytearray(), memoryview(b"")):
        with pytest.raises(EmptyFileError, match="^<bytes>: "):
            load_image(data)
    with pytest.raises(EmptyFileError, match="^upload.jpg: "):
        load_image(b"", name="upload.jpg")


def test_not_an_image_is_unsupported(tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture\n")
    with pytest.raises(UnsupportedMediaError) as caught:
        load_image(text)
    assert str(caught.value).startswith(f"{text}: not an image")
    noise = np.random.default_rng(1).bytes(500)
    with pytest.raises(UnsupportedMediaError, match="^upload.bin: "):
        load_image(noise, name="upload.bin")


def test_image_in_an_unsupported_format_is_unsupported(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (4, 4)), tmp_path / "pic.ppm")
    with pytest.raises(UnsupportedMediaError, match="supported format"):
        load_image(path)


def test_missing_path_and_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope.png"
    with pytest.raises(MediaNotFoundError, match="no such file") as caught:
        load_image(missing)
    assert str(missing) in str(caught.value)
    with pytest.raises(FileNotFoundError, match="is a directory"):
        load_image(tmp_path)
    with pytest.raises(MediaNotFoundError, match="^shown.png: "):
        load_image(str(missing), name="shown.png")
    with pytest.raises(MediaNotFoundError, match=r"^'' \(an empty path\): no such file"):
        load_image("")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to count open files")
def test_files_are_closed(tmp_path: Path) -> None:
    good = tmp_path / "anim.gif"
    second = Image.new("RGB", (8, 8))
    Image.new("RGB", (8, 8), RED).save(good, save_all=True, append_images=[second])
    bad = tmp_path / "cut.png"
    bad.write_bytes(_png_header_only(8, 8))
    before = len(os.listdir("/proc/self/fd"))
    load_image(good)
    with pytest.raises(CorruptMediaError):
        load_image(bad)
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (MediaNotFoundError, FileNotFoundError),
        (EmptyFileError, ValueError),
        (UnsupportedMediaError, ValueError),
        (CorruptMediaError, ValueError),
        (MediaTooLargeError, ValueError),
    ],
)
def test_error_hierarchy(error: type, builtin: type) -> None:
    assert issubclass(error, DeepfakeDetectorError)
    assert issubclass(error, builtin)
    assert str(error("x.png", "why")) == "x.png: why"


@pytest.mark.parametrize(
    "call",
    [
        lambda: load_image(np.zeros((2, 2), np.uint8), max_pixels=0),
        lambda: load_image(np.zeros((2, 2), np.uint8), background=(256, 0, 0)),
        lambda: launder(np.zeros((2, 2, 3), np.uint8), max_side=0),
        lambda: encode_jpeg(np.zeros((2, 2, 3), np.uint8), quality=101),
    ],
    ids=["max_pixels", "background", "max_side", "quality"],
)
def test_invalid_arguments(call) -> None:
    with pytest.raises(InvalidArgumentError):
        call()


# --- launder and encode --------------------------------------------------------------------


def _smooth(height: int, width: int) -> np.ndarray:
    """A gradient with a little noise: JPEG changes it, but only slightly."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=2)
    jitter = np.random.default_rng(2).normal(0, 4, base.shape)
    return np.clip(base + jitter, 0, 255).astype(np.uint8)


def test_launder_shrinks_and_loses_a_little() -> None:
    image = _smooth(600, 1000)
    out = launder(image)
    _assert_rgb(out, (307, 512))
    reference = np.asarray(Image.fromarray(image).resize((512, 307), Image.Resampling.LANCZOS))
    difference = np.abs(out.astype(int) - reference.astype(int))
    assert difference.max() > 0  # JPEG loss
    assert difference.mean() < 6


def test_launder_never_upscales_and_handles_tall_images() -> None:
    small = _smooth(80, 100)
    out = launder(small, quality=70)
    _assert_rgb(out, (80, 100))
    assert not np.array_equal(out, small)
    assert np.abs(out.astype(int) - small.astype(int)).mean() < 8
    assert launder(_smooth(700, 70), max_side=350).shape == (350, 35, 3)


def test_encode_jpeg() -> None:
    data = encode_jpeg(_smooth(20, 30), quality=95)
    assert data[:2] == b"\xff\xd8"
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.format == "JPEG" and decoded.mode == "RGB" and decoded.size == (30, 20)


# --- suffixes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a.jpg", True),
        ("A.JPEG", True),
        (Path("x/y.Tiff"), True),
        ("b.gif", True),
        ("c.webp", True),
        ("c.txt", False),
        ("noext", False),
        ("jpg", False),
        ("d.jpg.txt", False),
    ],
)
def test_is_image_path(path, expected: bool) -> None:
    assert is_image_path(path) is expected


def _smooth_photo(width: int, height: int) -> np.ndarray:
    """A smooth colour picture (gradients), on which reduced-scale decoding must stay faithful."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([x / width * 255, y / height * 255, (x + y) / (width + height) * 255], axis=-1).astype(np.uint8)


def test_min_side_decodes_a_large_jpeg_at_reduced_scale(tmp_path: Path) -> None:
    picture = _smooth_photo(1200, 900)
    path = _save(Image.fromarray(picture), tmp_path / "big.jpg", quality=95)
    full = load_image(path)
    _assert_rgb(full, (900, 1200))
    reduced = load_image(path, min_side=200)  # 1/4 keeps 225 x 300, 1/8 would go under 200
    _assert_rgb(reduced, (225, 300))
    assert load_image(path.read_bytes(), min_side=448).shape[:2] == (450, 600)
    shrunk = np.asarray(Image.fromarray(full).resize((300, 225), Image.Resampling.BILINEAR), dtype=np.float32)
    assert np.abs(reduced.astype(np.float32) - shrunk).mean() < 3.0  # the same picture, not a crop or a shift


def test_min_side_keeps_full_size_when_it_cannot_reduce(tmp_path: Path) -> None:
    """Small JPEGs, other formats and arrays keep every pixel."""
    small = _save(Image.fromarray(_smooth_photo(300, 200)), tmp_path / "small.jpg")
    assert load_image(small, min_side=224).shape[:2] == (200, 300)
    png = _save(Image.fromarray(_smooth_photo(1200, 900)), tmp_path / "big.png")
    assert load_image(png, min_side=100).shape[:2] == (900, 1200)
    assert load_image(_smooth_photo(1200, 900), min_side=100).shape[:2] == (900, 1200)


@pytest.mark.parametrize("min_side", [0, -5, 2.5, "224", True])
def test_bad_min_side_is_refused(min_side: object) -> None:
    with pytest.raises(InvalidArgumentError, match="min_side"):
        load_image(_smooth_photo(64, 64), min_side=min_side)


def _pictures_of_every_path(tmp_path: Path) -> list[object]:
    """Sources that reach each conversion of load_image: RGB JPEG file and bytes, RGBA PNG,
    16-bit and float pictures, a palette picture, an array and a Pillow image."""
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (301, 257, 3), dtype=np.uint8)
    jpeg = tmp_path / "a.jpg"
    Image.fromarray(rgb).save(jpeg, quality=90)
    rgba = np.dstack([rgb, rng.integers(0, 256, (301, 257), dtype=np.uint8)])
    png = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(png)
    sixteen = Image.fromarray(rng.integers(0, 65536, (140, 190), dtype=np.uint16).astype(np.int32), "I")
    floats = Image.fromarray(rng.random((150, 120), dtype=np.float32), "F")
    return [jpeg, jpeg.read_bytes(), png, sixteen, floats, Image.fromarray(rgb).convert("P"), rgb, Image.fromarray(rgb)]


def test_every_conversion_gives_a_fresh_writable_array(tmp_path: Path) -> None:
    """Whatever the source's pixel mode, the array is the caller's own: writing to it changes
    neither the source nor what a second load returns."""
    for source in _pictures_of_every_path(tmp_path):
        first = load_image(source)
        assert first.dtype == np.uint8 and first.ndim == 3 and first.shape[2] == 3, type(source)
        assert first.flags["C_CONTIGUOUS"] and first.flags["WRITEABLE"], type(source)
        before = first.copy()
        first[...] = 7
        again = load_image(source)
        assert np.array_equal(again, before), type(source)
        if isinstance(source, np.ndarray):
            assert not np.shares_memory(again, source)


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A 16x16 JPEG whose frame header is rewritten to declare ``width`` x ``height``."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 150)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    frame = data.find(b"\xff\xc0")
    data[frame + 5 : frame + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_a_jpeg_too_small_for_its_declared_size_is_damaged(tmp_path: Path) -> None:
    forged = _jpeg_declaring(9000, 9000)
    path = tmp_path / "forged.jpg"
    path.write_bytes(forged)
    for source in (path, forged):
        with pytest.raises(CorruptMediaError, match=r"cannot hold the 9000x9000 pixels its header declares"):
            load_image(source)
    blank = io.BytesIO()  # the fewest bytes a real JPEG of this size takes: blank, grey, quality 1
    Image.new("L", (2000, 2000), 0).save(blank, "JPEG", quality=1, optimize=True)
    assert load_image(blank.getvalue()).shape == (2000, 2000, 3)
    assert load_image(_jpeg_declaring(32, 32)).shape == (32, 32, 3)  # cut short but plausible: decoded


def test_an_arithmetic_coded_jpeg_is_exempt_from_the_size_rule() -> None:
    from deepfake_detector.media.image import _frame_marker

    forged = bytearray(_jpeg_declaring(9000, 9000))
    assert _frame_marker(io.BytesIO(bytes(forged))) == 0xC0
    forged[forged.find(b"\xff\xc0") + 1] = 0xC9  # the same header, marked as arithmetic coding
    assert _frame_marker(io.BytesIO(bytes(forged))) == 0xC9
    try:
        load_image(bytes(forged), max_pixels=10**8)
    except CorruptMediaError as exc:  # its data are not arithmetic-coded, so decoding may fail, but not by size
        assert "cannot hold" not in str(exc)
