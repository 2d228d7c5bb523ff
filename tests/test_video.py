"""Tests for deepfake_detector.media.video: containers, sampling, rotation, streaming, failures.

Every video is generated with PyAV in ``tmp_path`` (see ``media_factory``); frames carry
their own index, so the tests check exactly which frames came back.
"""

from __future__ import annotations

import math
import os
import sys
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
from media_factory import MARKER, default_encoder, frame_image, has_encoder, read_index, write_audio_only, write_video

from deepfake_detector.errors import (
    CorruptMediaError,
    DeepfakeDetectorError,
    EmptyFileError,
    InvalidArgumentError,
    MediaNotFoundError,
    MediaTooLargeError,
    UnsupportedMediaError,
)
from deepfake_detector.media.video import (
    VIDEO_SUFFIXES,
    FrameSampling,
    VideoInfo,
    _rotation,
    is_video_path,
    iter_frames,
    probe_video,
)

EVERY_FRAME = FrameSampling(every_n=1)


def _indices(path: Path, sampling: FrameSampling) -> list[int]:
    """Indices of the frames returned, after checking each frame shows the frame it claims."""
    frames = list(iter_frames(path, sampling))
    for frame in frames:
        assert read_index(frame.image) == frame.index
    return [frame.index for frame in frames]


def _open_handles(path: Path) -> int:
    """How many of this process's file descriptors point at ``path`` (Linux only)."""
    target = os.path.realpath(path)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == target
        except OSError:
            continue
    return count


needs_proc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts handles via /proc")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 frames of 96x64 at 10 fps, H.264 in MP4."""
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4")


# --- suffixes ---------------------------------------------------------------------------


def test_video_suffixes() -> None:
    assert VIDEO_SUFFIXES == {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}
    assert is_video_path("a/b/Clip.MP4")
    assert is_video_path(Path("x.webm"))
    assert not is_video_path("photo.jpg")
    assert not is_video_path("mp4")


# --- every container round trip ---------------------------------------------------------

CONTAINERS = [
    pytest.param(".mp4", None, "h264", id="mp4-h264"),
    pytest.param(".m4v", None, "h264", id="m4v-h264"),
    pytest.param(".mov", None, "h264", id="mov-h264"),
    pytest.param(".mkv", None, "h264", id="mkv-h264"),
    pytest.param(".webm", "libvpx-vp9", "vp9", id="webm-vp9"),
    pytest.param(".webm", "libvpx", "vp8", id="webm-vp8"),
    pytest.param(".avi", "mpeg4", "mpeg4", id="avi-mpeg4"),
    pytest.param(".avi", "mjpeg", "mjpeg", id="avi-mjpeg"),
]


@pytest.mark.parametrize(("suffix", "encoder", "codec"), CONTAINERS)
def test_container_round_trip(tmp_path: Path, suffix: str, encoder: str | None, codec: str) -> None:
    if not has_encoder(encoder or "libx264"):
        pytest.skip(f"this PyAV build has no {encoder or 'libx264'} encoder")
    path = write_video(tmp_path / f"clip{suffix}", codec=encoder)

    info = probe_video(path)
    assert info == VideoInfo(
        path=str(path),
        width=96,
        height=64,
        fps=10.0,
        frame_count=30,
        duration=pytest.approx(3.0, abs=0.11),
        rotation=0,
        codec=codec,
    )

    frames = list(iter_frames(path, EVERY_FRAME))
    assert [frame.index for frame in frames] == list(range(30))
    for frame in frames:
        assert frame.image.shape == (64, 96, 3)
        assert frame.image.dtype == np.uint8
        assert frame.image.flags["C_CONTIGUOUS"]
        assert read_index(frame.image) == frame.index
        assert frame.time == pytest.approx(frame.index / 10, abs=1e-3)
    red = frames[0].image[MARKER // 2, MARKER // 2].astype(int)
    assert red[0] > 180 and red[1] < 80 and red[2] < 80


def test_probe_to_dict(clip: Path) -> None:
    info = probe_video(clip)
    assert info.to_dict() == {
        "path": str(clip),
        "width": 96,
        "height": 64,
        "fps": 10.0,
        "frame_count": 30,
        "duration": info.duration,
        "rotation": 0,
        "codec": "h264",
    }


def test_path_objects_and_strings_agree(clip: Path) -> None:
    assert probe_video(str(clip)) == probe_video(clip)
    assert [f.index for f in iter_frames(str(clip), FrameSampling(every_n=10))] == [0, 10, 20]


# --- sampling ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sampling", "expected"),
    [
        (FrameSampling(every_n=1), list(range(30))),
        (FrameSampling(every_n=7), [0, 7, 14, 21, 28]),
        (FrameSampling(every_n=30), [0]),
        (FrameSampling(every_n=100), [0]),
        (FrameSampling(per_second=2), [0, 5, 10, 15, 20, 25]),
        # the first frame at or after each third of a second: ceil(k * 10 / 3)
        (FrameSampling(per_second=3), [0, 4, 7, 10, 14, 17, 20, 24, 27]),
        (FrameSampling(per_second=0.5), [0, 20]),
        (FrameSampling(per_second=50), list(range(30))),  # faster than the video: each frame once
        (FrameSampling(max_frames=1), [0]),
        (FrameSampling(max_frames=4), [0, 7, 15, 22]),
        (FrameSampling(max_frames=7), [0, 4, 8, 12, 17, 21, 25]),
        (FrameSampling(max_frames=30), list(range(30))),
        (FrameSampling(max_frames=100), list(range(30))),
        (FrameSampling(), list(range(30))),  # default: at most 32
    ],
    ids=lambda value: str(value.to_dict()) if isinstance(value, FrameSampling) else None,
)
def test_sampling_picks_the_expected_frames(clip: Path, sampling: FrameSampling, expected: list[int]) -> None:
    assert _indices(clip, sampling) == expected


@pytest.mark.parametrize("k", [2, 3, 5, 9, 16, 29])
def test_max_frames_spreads_evenly_over_the_whole_video(clip: Path, k: int) -> None:
    picked = _indices(clip, FrameSampling(max_frames=k))
    assert len(picked) == k
    assert picked[0] == 0
    assert picked[-1] >= 30 - math.ceil(30 / k)  # the last stretch is covered too
    gaps = np.diff(picked)
    assert gaps.max() - gaps.min() <= 1


def test_per_second_times_are_one_step_apart(clip: Path) -> None:
    frames = list(iter_frames(clip, FrameSampling(per_second=2)))
    assert [frame.time for frame in frames] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5], abs=1e-3)


def test_max_frames_with_count_estimated_from_duration(tmp_path: Path) -> None:
    # Matroska declares no frame count: it is estimated from duration times frame rate.
    path = write_video(tmp_path / "clip.mkv")
    assert probe_video(path).frame_count == 30
    assert _indices(path, FrameSampling(max_frames=4)) == [0, 7, 15, 22]


def test_max_frames_counts_packets_when_the_length_is_unknown(tmp_path: Path) -> None:
    # A "live" Matroska file has neither a frame count nor a duration in its header.
    path = write_video(tmp_path / "live.mkv", options={"live": "1"})
    info = probe_video(path)
    assert (info.frame_count, info.duration) == (None, None)
    assert _indices(path, FrameSampling(max_frames=4)) == [0, 7, 15, 22]
    assert _indices(path, FrameSampling(every_n=13)) == [0, 13, 26]


def test_sampling_default_and_to_dict() -> None:
    assert FrameSampling() == FrameSampling(max_frames=32)
    assert FrameSampling().to_dict() == {"every_n": None, "per_second": None, "max_frames": 32}
    assert FrameSampling(per_second=2.5).to_dict() == {"every_n": None, "per_second": 2.5, "max_frames": None}


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"every_n": 2, "max_frames": 3}, "every_n and max_frames"),
        ({"every_n": 2, "per_second": 1.0}, "every_n and per_second"),
        ({"per_second": 1.0, "max_frames": 3}, "per_second and max_frames"),
        ({"every_n": 0}, "every_n"),
        ({"every_n": -2}, "every_n"),
        ({"every_n": 1.5}, "every_n"),
        ({"every_n": True}, "every_n"),
        ({"per_second": 0}, "per_second"),
        ({"per_second": -1.0}, "per_second"),
        ({"per_second": float("nan")}, "per_second"),
        ({"per_second": float("inf")}, "per_second"),
        ({"per_second": "2"}, "per_second"),
        ({"max_frames": 0}, "max_frames"),
        ({"max_frames": -3}, "max_frames"),
        ({"max_frames": 2.0}, "max_frames"),
    ],
)
def test_sampling_validation(options: dict, named: str) -> None:
    with pytest.raises(InvalidArgumentError, match=named):
        FrameSampling(**options)


def test_bad_arguments_raise_on_the_call(clip: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="sampling"):
        iter_frames(clip, {"every_n": 2})  # type: ignore[arg-type]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidArgumentError, match="max_pixels"):
            iter_frames(clip, max_pixels=bad)
        with pytest.raises(InvalidArgumentError, match="max_pixels"):
            probe_video(clip, max_pixels=bad)


# --- rotation ---------------------------------------------------------------------------

# A pixel inside the stored top-left marker, once a frame is turned clockwise by the rotation.
MARKER_PIXEL = {0: (4, 4), 90: (4, -5), 180: (-5, -5), 270: (-5, 4)}


def _check_upright(path: Path, rotation: int) -> None:
    info = probe_video(path)
    assert info.rotation == rotation
    upright = (64, 96) if rotation in (90, 270) else (96, 64)
    assert (info.width, info.height) == upright
    frames = list(iter_frames(path, FrameSampling(every_n=9)))
    assert [frame.index for frame in frames] == [0, 9, 18, 27]
    for frame in frames:
        assert frame.image.shape == (upright[1], upright[0], 3)
        assert frame.image.flags["C_CONTIGUOUS"]
        red = frame.image[MARKER_PIXEL[rotation]].astype(int)
        assert red[0] > 180 and red[1] < 80 and red[2] < 80, "the marker is not in its corner"
        stored = np.rot90(frame.image, k=rotation // 90)  # undo the clockwise turn
        assert read_index(stored) == frame.index


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_display_matrix_rotation_mp4(tmp_path: Path, rotation: int) -> None:
    _check_upright(write_video(tmp_path / "phone.mp4", rotation=rotation), rotation)


@pytest.mark.parametrize("suffix", [".mov", ".mkv", ".webm"])
def test_display_matrix_rotation_other_containers(tmp_path: Path, suffix: str) -> None:
    _check_upright(write_video(tmp_path / f"phone{suffix}", rotation=90), 90)


@pytest.mark.parametrize(("tag", "rotation"), [("90", 90), ("180", 180), ("-90", 270), ("sideways", 0), ("inf", 0)])
def test_legacy_rotate_tag(tmp_path: Path, tag: str, rotation: int) -> None:
    # Only the Matroska muxer keeps a "rotate" tag; MP4 files from old phones carry it too,
    # but this FFmpeg turns those into a display matrix, tested above.
    path = write_video(tmp_path / "tagged.mkv", rotate_tag=tag)
    with av.open(str(path)) as container:
        assert container.streams.video[0].metadata.get("ROTATE") == tag
    _check_upright(path, rotation)


def _write_with_matrix(path: Path, matrix: list[int]) -> Path:
    """30 frames like :func:`write_video`'s, with ``matrix`` as the MP4 display matrix."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(default_encoder(".mp4"), rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        if not hasattr(stream, "set_display_matrix"):
            pytest.skip("this PyAV cannot write a display matrix")
        stream.set_display_matrix(matrix)
        for index in range(30):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame_image(index, 96, 64, rng), format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.mark.parametrize(
    "matrix", [[0] * 9, [1 << 16, 0, 0, 0, 0, 0, 0, 0, 1 << 30]], ids=["all-zero", "flattened-axis"]
)
def test_display_matrix_without_an_angle_turns_nothing(tmp_path: Path, matrix: list[int]) -> None:
    path = _write_with_matrix(tmp_path / "no_angle.mp4", matrix)
    with av.open(str(path)) as container:
        raw = next(container.decode(video=0)).rotation
    if math.isfinite(raw) and abs(raw) <= 360:
        pytest.skip(f"this FFmpeg reads an angle ({raw}) from the matrix")
    _check_upright(path, 0)


@pytest.mark.parametrize(
    ("raw", "rotation"),
    [
        (math.nan, 0),
        (math.inf, 0),
        (-math.inf, 0),
        (-(2**31), 0),
        (90, 270),
        (-90, 90),
        (270, 90),
        (89.6, 270),
        (180, 180),
        (45, 0),
    ],
)
def test_matrix_angle_to_clockwise_degrees(raw: float, rotation: int) -> None:
    # PyAV's angle counts counter-clockwise; what is no angle at all turns nothing.
    assert _rotation(SimpleNamespace(rotation=raw), 0) == rotation


def test_no_matrix_angle_leaves_the_rotate_tag_to_decide() -> None:
    assert _rotation(SimpleNamespace(rotation=0), 180) == 180


# --- streaming --------------------------------------------------------------------------


def test_memory_stays_flat_over_a_long_video(tmp_path: Path) -> None:
    path = write_video(tmp_path / "long.mp4", frames=600, width=64, height=64)
    frame_bytes = 64 * 64 * 3
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_frames(path, EVERY_FRAME))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 600
    assert peak < 10 * frame_bytes, f"peak {peak:,} bytes: frames are being kept"


@needs_proc
def test_the_file_is_opened_only_while_iterating(clip: Path) -> None:
    frames = iter_frames(clip, EVERY_FRAME)
    assert _open_handles(clip) == 0  # nothing is opened until iteration starts
    next(frames)
    assert _open_handles(clip) == 1
    frames.close()
    assert _open_handles(clip) == 0


@needs_proc
def test_breaking_out_of_a_loop_closes_the_file(clip: Path) -> None:
    frames = iter_frames(clip, EVERY_FRAME)
    for frame in frames:
        if frame.index == 3:
            break
    assert _open_handles(clip) == 1
    del frames, frame
    assert _open_handles(clip) == 0


@needs_proc
def test_the_file_is_closed_after_the_last_frame_and_after_errors(tmp_path: Path, clip: Path) -> None:
    assert len(list(iter_frames(clip, EVERY_FRAME))) == 30
    assert _open_handles(clip) == 0
    damaged = _with_garbage_in_the_middle(clip, tmp_path)
    with pytest.raises(CorruptMediaError):
        list(iter_frames(damaged, EVERY_FRAME))
    assert _open_handles(damaged) == 0
    # max_frames over a file of unknown length opens it twice, one after the other
    live = write_video(tmp_path / "live.mkv", options={"live": "1"})
    frames = iter_frames(live, FrameSampling(max_frames=3))
    next(frames)
    assert _open_handles(live) == 1
    frames.close()
    assert _open_handles(live) == 0


# --- errors -----------------------------------------------------------------------------


def _check_error(error: DeepfakeDetectorError, path: Path, reason: str) -> None:
    assert error.path == str(path)
    assert str(path) in str(error)
    assert reason in error.reason
    assert not isinstance(error, av.FFmpegError)


def _both_raise(path: Path, kind: type[DeepfakeDetectorError], reason: str, **kwargs) -> None:
    """``probe_video`` and iterating ``iter_frames`` both raise ``kind`` naming ``path``."""
    with pytest.raises(kind) as probed:
        probe_video(path, **kwargs)
    _check_error(probed.value, path, reason)
    with pytest.raises(kind) as iterated:
        next(iter_frames(path, **kwargs))
    _check_error(iterated.value, path, reason)


def _with_garbage_in_the_middle(path: Path, folder: Path) -> Path:
    data = bytearray(path.read_bytes())
    start, stop = len(data) * 2 // 5, len(data) * 3 // 5
    data[start:stop] = np.random.default_rng(1).integers(0, 256, stop - start, dtype=np.uint8).tobytes()
    damaged = folder / f"garbage{path.suffix}"
    damaged.write_bytes(bytes(data))
    return damaged


def _cut(path: Path, folder: Path, name: str) -> Path:
    data = path.read_bytes()
    cut = folder / name
    cut.write_bytes(data[: len(data) // 2])
    return cut


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    _both_raise(missing, MediaNotFoundError, "no such file")
    with pytest.raises(MediaNotFoundError):
        iter_frames(missing)  # raised on the call, before iterating


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "clips.mp4"
    folder.mkdir()
    _both_raise(folder, MediaNotFoundError, "directory")


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    _both_raise(empty, EmptyFileError, "empty")
    with pytest.raises(EmptyFileError):
        iter_frames(empty)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("notes.mp4", b"this is not a video, just some text\n" * 20),
        ("short.mkv", b"abc"),
        ("picture.mp4", b"\x89PNG\r\n\x1a\n" + bytes(200)),
        ("playlist.mp4", b"#EXTM3U\n#EXT-X-VERSION:3\nhttp://example.com/a.ts\n"),
        ("sound.avi", b"RIFF\x00\x00\x00\x00WAVEfmt "),
    ],
)
def test_not_a_video_container(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    _both_raise(path, UnsupportedMediaError, "not a video in a supported container")
    with pytest.raises(UnsupportedMediaError):
        iter_frames(path)


def test_audio_only_file(tmp_path: Path) -> None:
    _both_raise(write_audio_only(tmp_path / "voice.mp4"), UnsupportedMediaError, "no video stream")


def test_video_codec_without_decoder(tmp_path: Path) -> None:
    data = write_video(tmp_path / "clip.mkv").read_bytes()
    assert b"V_MPEG4/ISO/AVC" in data
    unknown = tmp_path / "unknown.mkv"
    unknown.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_QQQQQ/ISO/AVC", 1))
    _both_raise(unknown, UnsupportedMediaError, "no decoder")


def test_mp4_cut_in_half(tmp_path: Path, clip: Path) -> None:
    # The index (moov box) of a plain MP4 sits at the end: without it nothing can be read.
    _both_raise(_cut(clip, tmp_path, "half.mp4"), CorruptMediaError, "truncated or damaged")


def test_fast_start_mp4_cut_in_half_yields_frames_up_to_the_cut(tmp_path: Path) -> None:
    # With the index up front, the frames before the cut decode, then the cut is reported.
    whole = write_video(tmp_path / "web.mp4", options={"movflags": "faststart"})
    cut = _cut(whole, tmp_path, "half.mp4")
    assert probe_video(cut).frame_count == 30
    frames = []
    with pytest.raises(CorruptMediaError) as raised:
        for frame in iter_frames(cut, EVERY_FRAME):
            frames.append(frame)
    _check_error(raised.value, cut, "cannot decode frame")
    assert 1 <= len(frames) < 30
    assert [read_index(frame.image) for frame in frames] == list(range(len(frames)))


@pytest.mark.parametrize("suffix", [".mp4", ".mov"])
def test_garbage_in_the_middle_yields_frames_up_to_the_damage(tmp_path: Path, suffix: str) -> None:
    damaged = _with_garbage_in_the_middle(write_video(tmp_path / f"clip{suffix}"), tmp_path)
    assert probe_video(damaged).frame_count == 30  # the header is intact
    frames = []
    with pytest.raises(CorruptMediaError) as raised:
        for frame in iter_frames(damaged, EVERY_FRAME):
            frames.append(frame)
    _check_error(raised.value, damaged, f"cannot decode frame {len(frames)}")
    assert 1 <= len(frames) < 30
    assert [read_index(frame.image) for frame in frames] == list(range(len(frames)))


def test_matroska_cut_short_just_ends_early(tmp_path: Path) -> None:
    # Documented limit: FFmpeg reports nothing when a Matroska file ends early, so its
    # frames come back without an error, as for a shorter video.
    cut = _cut(write_video(tmp_path / "clip.mkv"), tmp_path, "half.mkv")
    indices = _indices(cut, EVERY_FRAME)
    assert 1 <= len(indices) < 30
    assert indices == list(range(len(indices)))


def test_over_max_pixels(clip: Path) -> None:
    _both_raise(clip, MediaTooLargeError, "96x64", max_pixels=96 * 64 - 1)
    assert probe_video(clip, max_pixels=96 * 64).width == 96


def test_errors_are_also_builtin_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        probe_video(tmp_path / "nope.mkv")
    (tmp_path / "notes.mp4").write_text("hello")
    with pytest.raises(ValueError):
        probe_video(tmp_path / "notes.mp4")
