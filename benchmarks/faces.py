"""Face detectors on ../shared/data/face_photos: recall, false detections and speed.

Prints one Markdown table per detector, rows by folder (single/, group/, none/) and in all.
How a detection counts depends on what the annotations hold for the photo:

- ``iou``: every face has a true box (the dlib/VOC photos and the face-services photos whose
  box list is complete): a true face is found when a detection overlaps it with IoU >= 0.3,
  matched greedily best score first, one detection per face; unmatched detections are false.
- ``boxes+count``: some faces have boxes, the count says there are more: boxed faces by IoU,
  then up to (count - boxes) unmatched detections are taken as the unboxed faces.
- ``count``: only a face count: min(detected, count) faces are found. Counts marked ``~N``,
  ``>N`` or ``>=N`` are estimates: their lower bound (N, N+1, N) is used, and detections above
  it are not counted as false, since they may be real faces. Above an exact count they are.
- ``none``: photos in none/ have no face: every detection there is false.

Speed is milliseconds per megapixel of the image handed to ``detect()``, median over
photos, after one warm-up call; the detectors shrink big photos themselves, so those cost
less per megapixel. Loading the file is not timed.

    python benchmarks/faces.py [--data ../shared/data/face_photos] [--detectors mtcnn haar]
"""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

from deepfake_detector.faces import FaceBox, FaceDetector, create_face_detector, list_face_detectors
from deepfake_detector.media.image import load_image

IOU_MATCH = 0.3
CATEGORIES = ("single", "group", "none")


@dataclass(frozen=True)
class Photo:
    """One annotated photo: ``count`` faces (a lower bound unless ``exact``), true boxes where known."""

    file: str
    category: str
    count: int
    exact: bool
    boxes: tuple[FaceBox, ...]

    @property
    def rule(self) -> str:
        if self.category == "none":
            return "none"
        if not self.boxes:
            return "count"
        return "iou" if self.exact and len(self.boxes) == self.count else "boxes+count"


@dataclass(frozen=True)
class Outcome:
    """What a detector did on one photo."""

    photo: Photo
    detected: int
    found: int
    false: int
    ms_per_mp: float


def parse_count(text: str) -> tuple[int, bool]:
    """``"7"`` -> (7, True); estimates ``~N``, ``>N``, ``>=N`` -> their lower bound, not exact."""
    text = text.strip()
    if text.startswith(">="):
        return int(text[2:]), False
    if text.startswith(">"):
        return int(text[1:]) + 1, False
    if text.startswith("~"):
        return int(text[1:]), False
    return int(text), True


def parse_boxes(text: str) -> tuple[FaceBox, ...]:
    """``"x,y,w,h;x,y,w,h"`` (pixels) -> boxes with score 1."""
    boxes = []
    for part in filter(None, text.split(";")):
        x, y, w, h = (float(v) for v in part.split(","))
        boxes.append(FaceBox(x, y, w, h, 1.0))
    return tuple(boxes)


def load_annotations(root: Path) -> list[Photo]:
    """The photos listed in annotations/faces.csv (faces.json holds the same rows)."""
    with (root / "annotations" / "faces.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    photos = []
    for row in rows:
        count, exact = parse_count(row["face_count"])
        photos.append(Photo(row["file"], row["category"], count, exact, parse_boxes(row["boxes_xywh"])))
    return photos


def match(truth: tuple[FaceBox, ...], detections: list[FaceBox]) -> int:
    """How many true boxes a detection claims at IoU >= 0.3, best-scored detection first."""
    free = list(truth)
    matched = 0
    for det in sorted(detections, key=lambda b: b.score, reverse=True):
        overlaps = [det.iou(t) for t in free]
        if overlaps and max(overlaps) >= IOU_MATCH:
            free.pop(int(np.argmax(overlaps)))
            matched += 1
    return matched


def judge(photo: Photo, detections: list[FaceBox]) -> tuple[int, int]:
    """(faces found, false detections) on one photo, by the photo's rule."""
    detected = len(detections)
    if photo.rule == "none":
        return 0, detected
    if photo.rule == "count":
        found = min(detected, photo.count)
        return found, (detected - found) if photo.exact else 0
    matched = match(photo.boxes, detections)
    unmatched = detected - matched
    unboxed = min(unmatched, photo.count - len(photo.boxes))
    extra = unmatched - unboxed
    return matched + unboxed, extra if photo.exact else 0


def run(detector: FaceDetector, photos: list[Photo], root: Path) -> list[Outcome]:
    """Detect on every photo; time only ``detect()``, after one untimed warm-up call."""
    images = {p.file: load_image(root / p.file) for p in photos}
    detector.detect(images[photos[0].file])
    outcomes = []
    for photo in photos:
        image = images[photo.file]
        start = time.perf_counter()
        detections = detector.detect(image)
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        megapixels = image.shape[0] * image.shape[1] / 1e6
        found, false = judge(photo, detections)
        outcomes.append(Outcome(photo, len(detections), found, false, elapsed_ms / megapixels))
    return outcomes


def table(name: str, outcomes: list[Outcome]) -> str:
    """One Markdown table: a row per folder and one for all photos."""
    lines = [
        f"### {name}",
        "",
        "| photos | n | annotated faces | detected | found | recall | false detections | false per photo "
        "| ms/MP (median) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label in (*CATEGORIES, "all"):
        rows = [o for o in outcomes if label in ("all", o.photo.category)]
        annotated = sum(o.photo.count for o in rows if o.photo.category != "none")
        found = sum(o.found for o in rows)
        false = sum(o.false for o in rows)
        recall = f"{found / annotated:.3f}" if annotated else "-"
        lines.append(
            f"| {label} | {len(rows)} | {annotated} | {sum(o.detected for o in rows)} | {found} | {recall} "
            f"| {false} | {false / len(rows):.2f} | {statistics.median(o.ms_per_mp for o in rows):.0f} |"
        )
    boxed = [o for o in outcomes if o.photo.rule == "iou"]
    boxed_faces = sum(o.photo.count for o in boxed)
    boxed_found = sum(o.found for o in boxed)
    lines += [
        "",
        f"Strict part (rule `iou`): {boxed_found}/{boxed_faces} faces found "
        f"(recall {boxed_found / boxed_faces:.3f}), {sum(o.false for o in boxed)} false detections "
        f"on those {len(boxed)} photos.",
        "",
    ]
    return "\n".join(lines)


def rules_line(photos: list[Photo]) -> str:
    """How many photos (and annotated faces) each matching rule covers."""
    parts = []
    for rule in ("iou", "boxes+count", "count", "none"):
        chosen = [p for p in photos if p.rule == rule]
        faces = sum(p.count for p in chosen if rule != "none")
        parts.append(f"`{rule}` {len(chosen)} photos ({faces} faces)")
    return "Matching rules: " + ", ".join(parts) + "."


def set_threads(threads: int, detectors: list[str]) -> None:
    """Pin the thread pools: oversubscribed cores make OpenMP-style pools stall, not just slow."""
    import torch

    torch.set_num_threads(threads)
    if "haar" in detectors:
        import cv2

        cv2.setNumThreads(threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_data = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "face_photos"
    ap.add_argument("--data", default=str(default_data))
    ap.add_argument("--detectors", nargs="+", default=list_face_detectors(), choices=list_face_detectors())
    ap.add_argument("--max-side", type=int, default=None, help="override each detector's downscaling limit")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch and OpenCV; 1 keeps timings steady on a shared machine",
    )
    args = ap.parse_args()
    root = Path(args.data)
    photos = load_annotations(root)
    set_threads(args.threads, args.detectors)

    print(
        f"Face detectors on {root.name}, {date.today().isoformat()}, {platform.machine()}, "
        f"{args.threads} CPU thread(s).\n"
    )
    print(rules_line(photos) + "\n")
    for name in args.detectors:
        detector = create_face_detector(name, max_side=args.max_side)
        print(table(name, run(detector, photos, root)))


if __name__ == "__main__":
    main()
