"""Write small test videos with PyAV whose frames say which frame they are.

Every frame has a red square in its top-left corner (to check rotation), its index written
in binary as a row of white and black 8-pixel blocks (to check which frames came back), and
seeded noise below (so most of each file is frame data, as in real videos, and damage in
the middle of a file lands in frame data).
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from av.codec.codec import UnknownCodecError

MARKER = 16  # side of the red corner square, in pixels
BLOCK = 8  # side of one index bit
BITS_TOP = 24  # first row of the index bits
NOISE_TOP = 40  # first row of the noise

# The muxer for each suffix, and the encoders to try for it, best first.
_MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}
_ENCODERS = {
    ".mp4": ("libx264", "mpeg4"),
    ".m4v": ("libx264", "mpeg4"),
    ".mov": ("libx264", "mpeg4"),
    ".mkv": ("libx264", "mpeg4"),
    ".webm": ("libvpx-vp9", "libvpx"),
    ".avi": ("mpeg4", "mjpeg"),
}


def has_encoder(name: str) -> bool:
    """Whether this PyAV build can encode with ``name``."""
    try:
        av.codec.Codec(name, "w")
    except UnknownCodecError:
        return False
    return True


def default_encoder(suffix: str) -> str | None:
    """The first encoder this PyAV build has for ``suffix``, or None."""
    return next((name for name in _ENCODERS[suffix] if has_encoder(name)), None)


def frame_image(index: int, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """The RGB content of frame ``index``: red corner, index bits, noise."""
    image = np.full((height, width, 3), 40, dtype=np.uint8)
    image[:MARKER, :MARKER] = (255, 0, 0)
    for bit in range(width // BLOCK):
        if index >> bit & 1:
            image[BITS_TOP : BITS_TOP + BLOCK, bit * BLOCK : (bit + 1) * BLOCK] = 255
    if height > NOISE_TOP:
        image[NOISE_TOP:] = rng.integers(0, 256, (height - NOISE_TOP, width, 3), dtype=np.uint8)
    return image


def read_index(image: np.ndarray) -> int:
    """The index written into a decoded frame by :func:`frame_image` (stored orientation)."""
    bits = image.shape[1] // BLOCK
    centre = BITS_TOP + BLOCK // 2
    return sum(
        1 << bit
        for bit in range(bits)
        if image[centre - 2 : centre + 2, bit * BLOCK + 2 : bit * BLOCK + 6].mean() > 128
    )


def write_video(
    path: Path,
    *,
    frames: int = 30,
    width: int = 96,
    height: int = 64,
    fps: int = 10,
    codec: str | None = None,
    rotation: int | None = None,
    rotate_tag: str | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Write a test video; the container follows the suffix of ``path``.

    ``rotation`` is written as a display matrix: clockwise degrees a player turns the
    frames to show them upright (PyAV's ``set_display_rotation`` counts counter-clockwise).
    ``rotate_tag`` is written as the legacy ``rotate`` metadata tag, which only the
    Matroska muxer keeps. ``options`` go to the muxer (``{"movflags": "faststart"}``).
    """
    suffix = path.suffix.lower()
    encoder = codec or default_encoder(suffix)
    if encoder is None:
        raise RuntimeError(f"no encoder for {suffix} videos in this PyAV build")
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format=_MUXERS[suffix], options=options or {}) as container:
        stream = container.add_stream(encoder, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuvj420p" if encoder == "mjpeg" else "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(-rotation)
        if rotate_tag is not None:
            stream.metadata["rotate"] = rotate_tag
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_image(index, width, height, rng), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    """Write an AAC sound track and nothing else (an ``.mp4`` or ``.m4a`` file)."""
    rate = 44100
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        tone = np.sin(np.linspace(0, 440 * 2 * np.pi * seconds, int(rate * seconds))).astype(np.float32)
        for start in range(0, tone.size, 1024):
            frame = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate = rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_video_of(path: Path, images: list[np.ndarray], fps: int = 10) -> Path:
    """Write the given ``HxWx3`` uint8 RGB images (even sizes) as a video; the container follows the suffix."""
    suffix = path.suffix.lower()
    encoder = default_encoder(suffix)
    if encoder is None:
        raise RuntimeError(f"no encoder for {suffix} videos in this PyAV build")
    height, width = images[0].shape[:2]
    with av.open(str(path), "w", format=_MUXERS[suffix]) as container:
        stream = container.add_stream(encoder, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuvj420p" if encoder == "mjpeg" else "yuv420p"
        for image in images:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path
