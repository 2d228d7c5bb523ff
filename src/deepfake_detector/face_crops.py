"""Face crops, made one way for prediction and for training data.

``face_crops`` is the step the Detector runs on every image; ``crop_faces_dataset`` runs
the same step over a real/fake folder of images and videos and writes the crops in the
same layout, with ``crop.json`` recording how they were made. Training on that folder
stores the crop in the bundle, so inference crops faces exactly as the training data were.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .data.dataset import scan_folder
from .errors import DeepfakeDetectorError, InvalidArgumentError
from .faces.base import FaceBox, FaceDetector
from .faces.crop import CropSpec, crop_face
from .media.files import make_folder
from .media.image import load_image
from .media.video import FrameSampling, is_video_path, iter_frames

CROP_FILE = "crop.json"
MIN_FACE = 32  # pixels: a smaller face is reported as too small to judge, never guessed


def face_crops(
    image: np.ndarray, detector: FaceDetector, spec: CropSpec, min_face: int
) -> list[tuple[FaceBox, np.ndarray | None]]:
    """Every face the detector finds, with its crop; ``None`` for faces under ``min_face`` pixels."""
    return [
        (box, None if min(box.w, box.h) < min_face else crop_face(image, box, spec)) for box in detector.detect(image)
    ]


def read_crop_record(data: str | Path) -> tuple[CropSpec, str | None] | None:
    """The crop (and face detector) recorded by ``crop-faces`` in a data folder, or ``None``."""
    path = Path(data)
    path = (path.parent if path.suffix.lower() == ".csv" else path) / CROP_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        return CropSpec.from_dict(record["crop"]), record.get("face_detector")
    except (OSError, ValueError, KeyError, TypeError, DeepfakeDetectorError) as exc:
        raise InvalidArgumentError(f"{path}: unreadable crop record ({exc}).") from exc


@dataclass
class CropReport:
    files: int = 0
    crops: int = 0
    without_faces: int = 0
    failed: int = 0


def crop_faces_dataset(
    src: str | Path,
    dst: str | Path,
    spec: CropSpec,
    *,
    sampling: FrameSampling | None = None,
    face_detector: str | FaceDetector = "auto",
    min_face: int = MIN_FACE,
    image_format: str = "png",
    progress: bool = True,
) -> CropReport:
    """Write the face crops of every image and sampled video frame below ``src`` to ``dst``.

    The real/fake/group layout is kept (``fake/Deepfakes/x.mp4`` gives
    ``fake/Deepfakes/x.mp4_frame12_face0.png``; the suffix stays in the name so ``x.jpg``
    and ``x.png`` do not collide). ``crop.json`` is written first, so an interrupted run
    still says how its crops were made. A file that fails (a video damaged half-way
    included) gives no crops; it is reported on stderr and counted, and the run goes on.
    """
    from .faces import create_face_detector

    if image_format not in ("png", "jpg"):
        raise InvalidArgumentError(f"image_format must be 'png' or 'jpg'; got {image_format!r}.")
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise InvalidArgumentError(
            f"{dst}: lies inside the folder being cropped ({src}); its crops would be scanned as data "
            "(under the class folder they land in) by the next run. Choose a folder outside it."
        )
    detector = create_face_detector(face_detector) if isinstance(face_detector, str) else face_detector
    sampling = sampling or FrameSampling()
    samples = scan_folder(src, videos=True)
    report = CropReport()
    make_folder(dst, "the folder for the crops")
    record: dict[str, Any] = {
        "crop": spec.to_dict(),
        "face_detector": getattr(detector, "name", str(face_detector)),
        "min_face": min_face,
        "sampling": sampling.to_dict(),
        "source": str(src),
    }
    (dst / CROP_FILE).write_text(json.dumps(record, indent=2) + "\n")

    def crops_of(image: np.ndarray, suffix: str) -> list[tuple[str, np.ndarray]]:
        found = face_crops(image, detector, spec, min_face)
        return [(f"{suffix}_face{i}", crop) for i, (_, crop) in enumerate(found) if crop is not None]

    for sample in tqdm(samples, desc="crop-faces", unit="file", disable=not progress, file=sys.stderr):
        rel = sample.path.relative_to(src)
        report.files += 1
        try:
            if is_video_path(sample.path):
                crops = [
                    c
                    for frame in iter_frames(sample.path, sampling)
                    for c in crops_of(frame.image, f"_frame{frame.index}")
                ]
            else:
                crops = crops_of(load_image(sample.path), "")
        except DeepfakeDetectorError as exc:
            report.failed += 1
            tqdm.write(f"failed: {exc}", file=sys.stderr)
            continue
        for name, crop in crops:
            out = dst / rel.parent / f"{rel.name}{name}.{image_format}"
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(crop).save(out, **({"quality": 95} if image_format == "jpg" else {}))
        report.crops += len(crops)
        report.without_faces += not crops
    return report
