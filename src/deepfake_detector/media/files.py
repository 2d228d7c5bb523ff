"""Which files a command works on: images and videos below folders, and glob patterns expanded."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Sequence

from .image import is_image_path
from .video import is_video_path


def is_media_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has an image or a video suffix."""
    return is_image_path(path) or is_video_path(path)


def images_below(folder: str | os.PathLike[str], *, videos: bool = False) -> list[Path]:
    """Every file with an image suffix (and a video one, if asked) below ``folder``, sorted."""
    wanted = is_media_path if videos else is_image_path
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and wanted(p))


def expand_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Files as given; folders walked for images and videos; glob patterns expanded the same way.

    A file named explicitly is kept whatever its suffix (so a mislabelled image is still
    tried, and a non-image is reported). A path that does not exist and matches nothing
    is kept too, so that it is reported as failed rather than silently dropped.
    """
    paths: list[str] = []
    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            paths.extend(str(p) for p in images_below(path, videos=True))
        elif not path.exists() and glob.has_magic(text):
            found: list[str] = []
            for match in sorted(glob.glob(text, recursive=True)):
                if Path(match).is_dir():
                    found.extend(str(p) for p in images_below(match, videos=True))
                elif is_media_path(match):
                    found.append(match)
            paths.extend(found or [text])
        else:
            paths.append(text)
    return paths
