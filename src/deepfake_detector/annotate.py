"""Draw a verdict onto its picture: face boxes coloured by label, with their scores.

Used by ``predict --annotate`` and by front ends that show where the faces were found.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .results import FACE_TOO_SMALL, LABEL_FAKE, LABEL_REAL, LABEL_UNCERTAIN, FaceResult, Prediction

_COLOURS = {
    LABEL_FAKE: (220, 40, 40),
    LABEL_REAL: (40, 170, 60),
    LABEL_UNCERTAIN: (230, 150, 20),
    FACE_TOO_SMALL: (150, 150, 150),
}


def draw_faces(image: np.ndarray, faces: list[FaceResult], caption: str | None = None) -> Image.Image:
    """A copy of ``image`` with each face's box and ``p_fake`` (or "too small") drawn on it."""
    picture = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(picture)
    width = max(2, round(max(picture.size) / 400))
    font = ImageFont.load_default(size=max(12, round(max(picture.size) / 50)))
    for face in faces:
        x, y, w, h = face.box
        key = FACE_TOO_SMALL if face.status == FACE_TOO_SMALL else (face.label or LABEL_UNCERTAIN)
        colour = _COLOURS[key]
        draw.rectangle((x, y, x + w, y + h), outline=colour, width=width)
        text = "too small" if face.p_fake is None else f"{face.label} {face.p_fake:.2f}"
        if face.track is not None:
            text = f"#{face.track} {text}"
        left, top, right, bottom = draw.textbbox((x, y), text, font=font)
        label_top = max(0, y - (bottom - top) - 2 * width)
        draw.rectangle(
            (x, label_top, x + (right - left) + 2 * width, label_top + (bottom - top) + 2 * width), fill=colour
        )
        draw.text((x + width, label_top + width - (top - y)), text, fill=(255, 255, 255), font=font)
    if caption:
        draw.rectangle((0, 0, picture.width, max(14, picture.height // 20)), fill=(0, 0, 0))
        draw.text((4, 2), caption, fill=(255, 255, 255), font=font)
    return picture


def annotated_pictures(pred: Prediction) -> list[tuple[str, Image.Image]]:
    """``(name, picture)`` for each picture kept with ``pred`` (the image, or a video's most
    suspicious frames), its faces and the verdict drawn on it; empty when none was kept."""
    verdict = "no verdict" if pred.label is None else f"{pred.label} (p_fake {pred.p_fake:.2f})"
    return [
        (name, draw_faces(image, faces, verdict if name == "image" else f"{name}: video {verdict}"))
        for name, image, faces in (pred.artifacts.images if pred.artifacts else [])
    ]
