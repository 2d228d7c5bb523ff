"""Reading user media (images and video frames) into the one array form the models take, with typed errors."""

from __future__ import annotations

from .image import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    encode_jpeg,
    is_image_path,
    launder,
    load_image,
    probe_image,
)
from .video import VIDEO_SUFFIXES, FrameSampling, VideoFrame, VideoInfo, is_video_path, iter_frames, probe_video

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "encode_jpeg",
    "is_image_path",
    "launder",
    "load_image",
    "probe_image",
    "VIDEO_SUFFIXES",
    "FrameSampling",
    "VideoFrame",
    "VideoInfo",
    "is_video_path",
    "iter_frames",
    "probe_video",
]
