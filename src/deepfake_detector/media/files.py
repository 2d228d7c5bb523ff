"""Which files a command works on: images and videos below folders, glob patterns expanded, and path lists."""

from __future__ import annotations

import csv
import glob
import os
from pathlib import Path
from typing import Sequence

from ..errors import InvalidArgumentError
from .image import is_image_path
from .video import is_video_path


def is_media_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has an image or a video suffix."""
    return is_image_path(path) or is_video_path(path)


def make_folder(folder: str | os.PathLike[str], role: str) -> Path:
    """``folder``, made if missing. A file of that name, or a folder that cannot be made, is an
    InvalidArgumentError naming it and ``role`` (what it was given as), not the OS's bare
    "File exists"."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = "is a file, not a folder" if path.is_file() else f"cannot create the folder ({exc.strerror or exc})"
        raise InvalidArgumentError(f"{path}: {reason}; it was given as {role}.") from exc
    return path


def images_below(folder: str | os.PathLike[str], *, videos: bool = False) -> list[Path]:
    """Every file with an image suffix (and a video one, if asked) below ``folder``, sorted."""
    wanted = is_media_path if videos else is_image_path
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and wanted(p))


def expand_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Files as given; folders walked for images and videos; glob patterns expanded the same way.

    A file named explicitly is kept whatever its suffix (so a mislabelled image is still
    tried, and a non-image is reported). A path that does not exist and matches nothing
    is kept too, so that it is reported as failed rather than silently dropped. An empty
    path is refused (InvalidArgumentError).
    """
    paths: list[str] = []
    for item in inputs:
        text = os.fspath(item)
        if not text:  # Path("") is the current folder: an unset shell variable must not scan it
            raise InvalidArgumentError("An input path is empty (''); name a file, a folder or a pattern.")
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


def read_path_list(list_path: str | os.PathLike[str]) -> list[str]:
    """The entries of a path list: a ``.csv`` with a ``path`` column (such as a training
    manifest), or text with one entry per line (blank lines and ``#`` comments skipped).

    Relative entries are taken relative to the list's folder, as in training manifests.
    """
    path = Path(list_path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise InvalidArgumentError(f"{path}: path list not found.") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"{path}: unreadable path list ({exc}).") from exc
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if not rows or "path" not in rows[0]:
            raise InvalidArgumentError(f"{path}: a CSV path list needs a header with a 'path' column.")
        entries = [(row.get("path") or "").strip() for row in rows]
    else:
        entries = [line.strip() for line in text.splitlines()]
        entries = [e for e in entries if not e.startswith("#")]
    return [e if Path(e).is_absolute() else str(path.parent / e) for e in entries if e]


def expand_sources(inputs: Sequence[str | os.PathLike[str]]) -> list[str]:
    """:func:`~deepfake_detector.media.files.expand_inputs`, where an input ``@LIST`` stands
    for the entries of the path list ``LIST`` (see :func:`read_path_list`): files, folders or
    globs, expanded the same way. A file literally named ``@...`` is taken as it is."""
    expanded: list[str] = []
    for item in inputs:
        text = os.fspath(item)
        if text.startswith("@") and len(text) > 1 and not Path(text).exists():
            expanded.extend(expand_inputs(read_path_list(text[1:])))
        else:
            expanded.extend(expand_inputs([text]))
    return expanded
