"""Read a video as a stream of upright RGB frames, sampled, with typed errors on bad input.

Detectors judge a handful of frames from each clip, so :func:`iter_frames` decodes with PyAV
one frame at a time and converts only the sampled ones: memory stays flat however long the
video is. Every frame comes out as the ``HxWx3`` C-contiguous uint8 RGB array that
:mod:`deepfake_detector.media.image` produces for stills, turned upright when the file says
the camera was held sideways. Bad input raises the errors of :mod:`deepfake_detector.errors`,
each naming the file; no PyAV exception escapes.

Damage policy: a container whose header cannot be read raises :class:`CorruptMediaError` at
once; damage met while decoding raises :class:`CorruptMediaError` after the frames before it
have been yielded, so a caller keeps what it already has. Only damage that FFmpeg reports can
be caught: a Matroska, WebM or AVI file cut short usually just ends early, and its missing
tail cannot be told apart from a shorter video. Decoding runs without frame threading, which
would hide such errors.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import av
import numpy as np
from av.container import InputContainer
from av.stream import Disposition
from av.video.frame import VideoFrame as AVVideoFrame
from av.video.stream import VideoStream

from ..checks import is_whole
from ..errors import (
    CorruptMediaError,
    EmptyFileError,
    InvalidArgumentError,
    MediaError,
    MediaNotFoundError,
    MediaTooLargeError,
    UnsupportedMediaError,
)
from .image import DEFAULT_MAX_PIXELS

VIDEO_SUFFIXES: frozenset[str] = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"})
DEFAULT_MAX_FRAMES: int = 32

# The container is decided by content, and FFmpeg is then told which demuxer to use: only
# these three may parse a file, and never one that follows references to other files or
# URLs (HLS playlists, concat lists), which a hostile upload could otherwise use.
_CONTAINER_NAMES = "MP4, MOV, MKV, WebM and AVI"
_ISO_BOX_TYPES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"})
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"

# What PyAV raises on damaged data: every av.error.* class derives from FFmpegError, and
# PyAV itself raises built-ins on malformed metadata or frames.
_DECODE_ERRORS = (av.FFmpegError, OSError, ValueError, EOFError)


def is_video_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has a video suffix; used to pick video files out of folders cheaply."""
    return os.path.splitext(os.fspath(path))[1].lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class FrameSampling:
    """Which decoded frames :func:`iter_frames` returns; a detector rarely needs them all.

    Set exactly one of ``every_n`` (every N-th frame: 0, N, 2N, ...), ``per_second``
    (the first frame at or after each 1/N-second step of video time, never a frame twice)
    or ``max_frames`` (at most K frames spread evenly over the whole video, starting with
    the first). Setting none means ``max_frames=32``.
    """

    every_n: int | None = None
    per_second: float | None = None
    max_frames: int | None = None

    def __post_init__(self) -> None:
        chosen = [name for name, value in asdict(self).items() if value is not None]
        if len(chosen) > 1:
            raise InvalidArgumentError(
                f"set only one of every_n, per_second and max_frames; got {' and '.join(chosen)}."
            )
        if not chosen:
            object.__setattr__(self, "max_frames", DEFAULT_MAX_FRAMES)
        for name in ("every_n", "max_frames"):
            value = getattr(self, name)
            if value is not None and (not is_whole(value) or value < 1):
                raise InvalidArgumentError(f"{name} must be a positive integer; got {value!r}.")
        rate = self.per_second
        if rate is not None and (
            not isinstance(rate, (int, float, np.integer, np.floating))
            or isinstance(rate, bool)
            or not math.isfinite(rate)
            or rate <= 0
        ):
            raise InvalidArgumentError(f"per_second must be a positive number; got {rate!r}.")

    def to_dict(self) -> dict[str, int | float | None]:
        """The settings as plain values, for reports and run records."""
        return asdict(self)


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds, read from its header (and first frame) without decoding the rest.

    ``width`` and ``height`` are those of upright frames, after ``rotation`` (degrees
    clockwise, 0/90/180/270) is applied. ``fps`` is 0.0 when the file gives no frame rate.
    ``frame_count`` and ``duration`` (seconds) are None when the container does not say;
    for Matroska and WebM the count is estimated from duration times frame rate.
    """

    path: str
    width: int
    height: int
    fps: float
    frame_count: int | None
    duration: float | None
    rotation: int
    codec: str

    def to_dict(self) -> dict[str, str | int | float | None]:
        """The fields as plain values, for reports and JSON."""
        return asdict(self)


@dataclass
class VideoFrame:
    """One decoded frame: ``index`` counts decoded frames from 0, ``time`` is seconds from the
    first frame, and ``image`` is ``HxWx3`` C-contiguous uint8 RGB, already upright."""

    index: int
    time: float
    image: np.ndarray


def probe_video(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> VideoInfo:
    """Size, frame rate, length, rotation and codec of a video, to check a data set cheaply.

    Only the first frame is decoded, because FFmpeg reports a display-matrix rotation on
    decoded frames alone. Missing, empty, non-video, undecodable and oversized files raise
    the same typed errors as :func:`iter_frames`; damage after the first frame is found
    only when the video is decoded.
    """
    _check_max_pixels(max_pixels)
    label = os.fspath(path)
    demuxer = _sniff(label)
    with _open(label, demuxer) as container:
        stream = _video_stream(container, label, max_pixels)
        with _av_errors(label, "cannot decode the first frame"):
            first = next(container.decode(stream), None)
        if first is None:
            raise CorruptMediaError(label, "the video stream has no frames")
        rotation = _rotation(first, _tag_rotation(stream))
        fps = _fps(stream)
        duration = _duration(container, stream)
        width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(
            path=label,
            width=width,
            height=height,
            fps=fps,
            frame_count=_declared_frame_count(stream, duration, fps),
            duration=duration,
            rotation=rotation,
            codec=stream.codec_context.name,
        )


def iter_frames(
    path: str | os.PathLike[str],
    sampling: FrameSampling = FrameSampling(),
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[VideoFrame]:
    """Yield the frames ``sampling`` selects, decoding one frame at a time.

    Bad arguments and files that are missing, empty or not in a supported container raise
    on the call; problems inside the file raise during iteration (see the module's damage
    policy). Frames over ``max_pixels`` are refused from the header, before any decoding.
    The file is closed when iteration ends, fails, or the iterator is closed early.

    ``max_frames`` needs the number of frames up front: it is taken from the container
    (MP4, MOV, AVI) or estimated from duration times frame rate (Matroska, WebM); when
    neither is known, the file is read once without decoding to count its video packets,
    then decoded. An estimate that is too high returns fewer than ``max_frames`` frames.
    """
    _check_max_pixels(max_pixels)
    if not isinstance(sampling, FrameSampling):
        raise InvalidArgumentError(f"sampling must be a FrameSampling; got {sampling!r}.")
    label = os.fspath(path)
    return _frames(label, _sniff(label), sampling, max_pixels)


def _frames(label: str, demuxer: str, sampling: FrameSampling, max_pixels: int) -> Iterator[VideoFrame]:
    """The generator behind :func:`iter_frames`; the container is opened only once iterated."""
    with _open(label, demuxer) as container:
        stream = _video_stream(container, label, max_pixels)
        total = _declared_frame_count(stream, _duration(container, stream), _fps(stream))
        if sampling.max_frames is None or total is not None:
            yield from _decode(container, stream, label, _picker(sampling, total), max_pixels)
            return
        with _av_errors(label, "cannot read the packets of the video stream"):
            total = sum(1 for packet in container.demux(stream) if packet.size)
    with _open(label, demuxer) as container:
        stream = _video_stream(container, label, max_pixels)
        yield from _decode(container, stream, label, _picker(sampling, total), max_pixels)


def _decode(
    container: InputContainer,
    stream: VideoStream,
    label: str,
    pick: Callable[[int, float], bool],
    max_pixels: int,
) -> Iterator[VideoFrame]:
    """Decode ``stream`` frame by frame and yield, upright, the frames ``pick`` accepts."""
    fps = _fps(stream)
    tag_rotation = _tag_rotation(stream)
    frames = container.decode(stream)
    origin: float | None = None
    index = 0
    while True:
        with _av_errors(label, f"cannot decode frame {index}"):
            frame = next(frames, None)
        if frame is None:
            break
        # A stream may change resolution midway; refuse before converting a huge frame.
        _check_size(label, frame.width, frame.height, max_pixels)
        stamp = frame.time if frame.time is not None else (index / fps if fps else 0.0)
        origin = stamp if origin is None else origin
        time = stamp - origin
        if pick(index, time):
            with _av_errors(label, f"cannot convert frame {index} to RGB"):
                rgb = frame.to_ndarray(format="rgb24")
            quarter_turns = _rotation(frame, tag_rotation) // 90
            # A fresh copy: the decoded array is a view into an FFmpeg buffer.
            image = np.array(np.rot90(rgb, k=-quarter_turns), dtype=np.uint8, order="C")
            yield VideoFrame(index=index, time=time, image=image)
        index += 1
    if index == 0:
        raise CorruptMediaError(label, "the video stream has no frames")


def _picker(sampling: FrameSampling, total: int | None) -> Callable[[int, float], bool]:
    """A test of ``(index, time)`` that says whether a frame is sampled, in O(1) memory."""
    if sampling.every_n is not None:
        step = sampling.every_n
        return lambda index, time: index % step == 0
    if sampling.per_second is not None:
        rate = float(sampling.per_second)
        next_step = 0

        def on_step(index: int, time: float) -> bool:
            # Take the first frame at or after step k/rate, then move past its time; the
            # small slack absorbs rounding in timestamps such as 0.1 * 3.
            nonlocal next_step
            position = time * rate + 1e-6
            if position < next_step:
                return False
            next_step = math.floor(position) + 1
            return True

        return on_step
    # max_frames: frame floor(j * total / k) for j = 0..k-1, one at the start of each of k
    # equal stretches (every frame when there are at most k). Frame i is one of them when
    # the smallest j with j * total >= i * k is below k and lands on i.
    count, k = total, sampling.max_frames
    assert count is not None and k is not None  # guaranteed by _frames and __post_init__
    if count <= k:
        return lambda index, time: index < count

    def spread(index: int, time: float) -> bool:
        j = -(-index * k // count)
        return j < k and j * count < (index + 1) * k

    return spread


def _sniff(label: str) -> str:
    """Check that ``label`` is a readable, non-empty file and name the demuxer for its content."""
    if os.path.isdir(label):
        raise MediaNotFoundError(label, "is a directory, not a video file")
    if not os.path.exists(label):
        raise MediaNotFoundError(label, "no such file")
    if not os.path.isfile(label):
        raise MediaNotFoundError(label, "is not a regular file")
    try:
        with open(label, "rb") as handle:
            head = handle.read(12)
    except OSError as exc:
        raise MediaNotFoundError(label, f"cannot be opened ({exc.strerror})") from exc
    if not head:
        raise EmptyFileError(label, "file is empty (0 bytes)")
    if head[4:8] in _ISO_BOX_TYPES:
        return "mov"
    if head[:4] == _EBML_MAGIC:
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    raise UnsupportedMediaError(label, f"not a video in a supported container ({_CONTAINER_NAMES})")


@contextmanager
def _open(label: str, demuxer: str) -> Iterator[InputContainer]:
    """Open ``label`` with the given demuxer and close it on leaving, whatever happens.

    The ``file:`` prefix stops FFmpeg from reading a name such as ``concat:a|b`` as a
    protocol; odd bytes in metadata are replaced rather than failing the whole file.
    """
    with _av_errors(label, "the container is truncated or damaged"):
        container = av.open("file:" + os.path.abspath(label), format=demuxer, metadata_errors="replace")
    with container:
        yield container


def _video_stream(container: InputContainer, label: str, max_pixels: int) -> VideoStream:
    """The first real video stream (cover art does not count), checked for size and decoder."""
    streams = [s for s in container.streams.video if not s.disposition & Disposition.attached_pic]
    if not streams:
        raise UnsupportedMediaError(label, "no video stream")
    stream = streams[0]
    if stream.codec_context is None:
        raise UnsupportedMediaError(label, "no decoder for its video codec in this FFmpeg build")
    _check_size(label, stream.codec_context.width, stream.codec_context.height, max_pixels)
    return stream


@contextmanager
def _av_errors(label: str, doing: str) -> Iterator[None]:
    """Turn PyAV's and FFmpeg's exceptions into :class:`CorruptMediaError` naming the file."""
    try:
        yield
    except MediaError:
        raise
    except _DECODE_ERRORS as exc:
        detail = exc.strerror if isinstance(exc, av.FFmpegError) and exc.strerror else str(exc)
        raise CorruptMediaError(label, f"{doing} ({detail})") from exc


def _check_size(label: str, width: int, height: int, max_pixels: int) -> None:
    """Refuse frames over the pixel limit from their dimensions alone."""
    if width * height > max_pixels:
        raise MediaTooLargeError(
            label,
            f"video frames are {width}x{height} ({width * height:,} pixels), over the limit of {max_pixels:,} pixels",
        )


def _check_max_pixels(max_pixels: int) -> None:
    """Refuse a pixel limit that is not a positive integer, before touching the file."""
    if not is_whole(max_pixels) or max_pixels < 1:
        raise InvalidArgumentError(f"max_pixels must be a positive integer; got {max_pixels!r}.")


def _rotation(frame: AVVideoFrame, tag_rotation: int) -> int:
    """Clockwise degrees (0/90/180/270) that turn ``frame`` upright.

    FFmpeg attaches the container's display matrix to each decoded frame; PyAV reads its
    angle as counter-clockwise, hence the sign. Flips in the matrix are ignored. Without
    a matrix, the legacy ``rotate`` tag (already clockwise) decides. A matrix with no
    angle in it (all zeros, or an axis scaled to nothing) gives NaN, which PyAV turns into
    INT_MIN: :func:`_quarter` counts that as no turn.
    """
    if frame.rotation:
        return _quarter(-frame.rotation)
    return tag_rotation


def _tag_rotation(stream: VideoStream) -> int:
    """Clockwise degrees from the legacy ``rotate`` tag (``ROTATE`` in Matroska), or 0."""
    for key, value in stream.metadata.items():
        if key.lower() == "rotate":
            try:
                return _quarter(float(value))
            except ValueError:  # not a number
                return 0
    return 0


def _quarter(degrees: float) -> int:
    """``degrees`` rounded to the nearest quarter turn, in [0, 360).

    NaN, infinity or more than a full turn either way is no angle a camera wrote but a
    broken matrix or tag, and turning the frames by it would only spoil them: 0.
    """
    if not math.isfinite(degrees) or abs(degrees) > 360:
        return 0
    return round(degrees / 90) % 4 * 90


def _fps(stream: VideoStream) -> float:
    """Average frame rate, or the rate FFmpeg guesses, or 0.0 when there is none."""
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else 0.0


def _duration(container: InputContainer, stream: VideoStream) -> float | None:
    """Seconds of video from the stream header, else from the container header, else None."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _declared_frame_count(stream: VideoStream, duration: float | None, fps: float) -> int | None:
    """Frames the container declares, else duration times frame rate, else None."""
    if stream.frames > 0:
        return stream.frames
    if duration and fps:
        return max(1, round(duration * fps))
    return None
