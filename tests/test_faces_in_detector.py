"""Faces and videos through the Detector: per-face verdicts, tracks, video verdicts, outputs.

A scripted face detector (boxes chosen by the test) keeps these tests exact and fast;
tests/test_faces.py checks the real detectors on real photos.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from media_factory import write_video_of
from PIL import Image

from deepfake_detector import Detector
from deepfake_detector.bundle import CONFIG_FILE
from deepfake_detector.cli import main
from deepfake_detector.data.synthetic import synthetic_image
from deepfake_detector.errors import InvalidArgumentError
from deepfake_detector.faces.base import FaceBox, box_iou
from deepfake_detector.faces.crop import CropSpec, crop_face
from deepfake_detector.media.video import FrameSampling
from deepfake_detector.tracking import FaceTracker
from deepfake_detector.verdict import aggregate_faces, track_score, video_score


class ScriptedFaces:
    """A FaceDetector that returns boxes from a function of the image (or fails if called when forbidden)."""

    name = "scripted"

    def __init__(self, boxes=None, forbidden: bool = False) -> None:
        self.boxes = boxes or (lambda image: [])
        self.forbidden = forbidden
        self.calls = 0

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        if self.forbidden:
            raise AssertionError("face detection should not run")
        self.calls += 1
        return self.boxes(image)


def _scene(seed: int = 0, size: int = 160, fake: bool = False) -> np.ndarray:
    return synthetic_image(np.random.default_rng(seed), size, fake=fake)


def _face_bundle(trained_bundle: Path, tmp_path: Path, margin: float = 0.2) -> Path:
    """The trained bundle, declared as trained on face crops with ``margin``."""
    out = tmp_path / "face-bundle"
    shutil.copytree(trained_bundle, out)
    config = json.loads((out / CONFIG_FILE).read_text())
    config["preprocessing"]["crop"] = {"margin": margin, "square": True}
    (out / CONFIG_FILE).write_text(json.dumps(config))
    return out


THREE = [FaceBox(10, 10, 60, 60, 0.99), FaceBox(90, 20, 50, 50, 0.95), FaceBox(100, 120, 12, 12, 0.9)]


def test_faces_are_cropped_scored_and_combined(trained_bundle: Path) -> None:
    faces = ScriptedFaces(lambda image: list(THREE))
    det = Detector.load(trained_bundle, face_detector=faces, min_face=32)
    image = _scene(1)
    pred = det.predict(image, faces="only")
    assert pred.scored_on == "faces" and len(pred.faces) == 3
    big, medium, tiny = pred.faces
    assert tiny.status == "too_small" and tiny.p_fake is None and tiny.label is None
    assert big.box == (10, 10, 60, 60) and big.detector_score == pytest.approx(0.99)
    # Each face is scored on exactly the crop the bundle's spec gives (default spec: whole-image bundle).
    expected = det.score_batch([crop_face(image, THREE[0], CropSpec()), crop_face(image, THREE[1], CropSpec())])
    assert [big.p_fake, medium.p_fake] == pytest.approx(list(expected), abs=1e-6)
    assert pred.p_fake == pytest.approx(max(expected))
    assert pred.label == ("fake" if pred.p_fake >= det.threshold else "real")
    mean = det.predict(image, faces="only", aggregate="mean")
    assert mean.p_fake == pytest.approx(float(np.mean(expected)))
    with pytest.raises(InvalidArgumentError, match="aggregate"):
        det.predict(image, faces="only", aggregate="median")
    with pytest.raises(InvalidArgumentError, match="faces"):
        det.predict(image, faces="sometimes")


def test_auto_takes_whole_images_for_a_whole_image_bundle(trained_bundle: Path) -> None:
    det = Detector.load(trained_bundle, face_detector=ScriptedFaces(forbidden=True))
    pred = det.predict(_scene(2))
    assert pred.scored_on == "whole_image" and pred.faces == [] and pred.note is None


def test_auto_uses_faces_for_a_face_bundle(trained_bundle: Path, tmp_path: Path) -> None:
    bundle = _face_bundle(trained_bundle, tmp_path, margin=0.2)
    faces = ScriptedFaces(lambda image: [THREE[0]])
    det = Detector.load(bundle, face_detector=faces)
    image = _scene(3)
    pred = det.predict(image)
    assert pred.scored_on == "faces" and faces.calls == 1
    assert pred.p_fake == pytest.approx(det.score_batch([crop_face(image, THREE[0], CropSpec(margin=0.2))])[0])
    assert det.summary()["input"] == "face crops"


def test_no_face_and_too_small_faces(trained_bundle: Path, tmp_path: Path) -> None:
    det = Detector.load(_face_bundle(trained_bundle, tmp_path), face_detector=ScriptedFaces())
    image = _scene(4)
    whole = det.predict(image)
    assert whole.scored_on == "whole_image" and "no face found" in whole.note
    assert whole.p_fake == pytest.approx(det.score_batch([image])[0])
    only = det.predict(image, faces="only")
    assert only.label is None and only.p_fake is None and only.scored_on == "nothing" and only.ok
    tiny = Detector.load(
        _face_bundle(trained_bundle, tmp_path / "b"), face_detector=ScriptedFaces(lambda im: [THREE[2]])
    )
    small = tiny.predict(image)
    assert small.label is None and "too small" in small.note and small.faces[0].status == "too_small"


def test_predict_many_matches_predict_and_keeps_media(trained_bundle: Path) -> None:
    det = Detector.load(trained_bundle, face_detector=ScriptedFaces(lambda image: list(THREE)))
    images = [_scene(i, fake=i % 2 == 1) for i in range(5)]
    crops: list[tuple[str | None, str]] = []
    many = list(
        det.predict_many(
            images,
            faces="only",
            batch_size=4,
            workers=2,
            keep_media=True,
            on_crop=lambda path, name, crop: crops.append((path, name)),
        )
    )
    for image, pred in zip(images, many):
        single = det.predict(image, faces="only")
        assert pred.p_fake == pytest.approx(single.p_fake, abs=1e-6)
        assert [f.p_fake for f in pred.faces] == pytest.approx([f.p_fake for f in single.faces], abs=1e-6)
        name, kept, faces = pred.artifacts.images[0]
        assert name == "image" and np.array_equal(kept, image) and faces is pred.faces
    assert len(crops) == 2 * len(images)  # the tiny face is never cropped
    assert {name for _, name in crops} == {"face0", "face1"}


def _moving_face_video(path: Path, frames: int = 20) -> Path:
    rng = np.random.default_rng(5)
    images = [synthetic_image(rng, 128, fake=False) for _ in range(frames)]
    return write_video_of(path, images, fps=10)


def _box_track(image: np.ndarray) -> list[FaceBox]:
    # One face drifting right by a few pixels per frame: the scene's mean tells frames apart.
    shift = int(image.mean()) % 7
    return [FaceBox(20 + shift, 30, 56, 56, 0.99)]


def test_video_tracks_timeline_and_verdict(trained_bundle: Path, tmp_path: Path) -> None:
    video = _moving_face_video(tmp_path / "clip.mp4")
    det = Detector.load(trained_bundle, face_detector=ScriptedFaces(_box_track))
    pred = det.predict(video, faces="only", sampling=FrameSampling(max_frames=8), keep_media=True)
    assert pred.kind == "video" and pred.scored_on == "faces"
    assert pred.video.frames_sampled == 8 and len(pred.video.timeline) == 8
    assert [t.track for t in pred.video.tracks] == [0], "one drifting face is one track"
    frame_scores = [f.faces[0].p_fake for f in pred.video.timeline]
    assert pred.video.tracks[0].p_fake == pytest.approx(float(np.mean(sorted(frame_scores)[-3:])))
    assert pred.p_fake == pytest.approx(pred.video.tracks[0].p_fake)
    assert pred.label == ("fake" if pred.p_fake >= det.threshold else "real")
    kept = pred.artifacts.images
    assert 1 <= len(kept) <= 3
    by_index = {f.index: f.p_fake for f in pred.video.timeline}
    kept_scores = [by_index[int(name.removeprefix("frame"))] for name, _, _ in kept]
    assert kept_scores == sorted(kept_scores, reverse=True)
    assert kept_scores[0] == max(by_index.values())
    round_trip = json.loads(pred.to_json())
    assert len(round_trip["video"]["timeline"]) == 8 and round_trip["video"]["rule"]


def test_video_without_faces_is_judged_on_whole_frames(trained_bundle: Path, tmp_path: Path) -> None:
    video = _moving_face_video(tmp_path / "noface.mkv", frames=12)
    det = Detector.load(_face_bundle(trained_bundle, tmp_path), face_detector=ScriptedFaces())
    pred = det.predict(video, sampling=FrameSampling(every_n=3))
    assert pred.scored_on == "whole_image" and "no face" in pred.note
    assert [t.track for t in pred.video.tracks] == [-1]
    assert [f.index for f in pred.video.timeline] == [0, 3, 6, 9]


def test_mixed_folder_keeps_order_and_survives_a_bad_video(trained_bundle: Path, tmp_path: Path) -> None:
    good_video = _moving_face_video(tmp_path / "a.mp4", frames=10)
    bad_video = tmp_path / "b.mp4"
    bad_video.write_bytes(good_video.read_bytes()[: good_video.stat().st_size // 3])
    image_path = tmp_path / "c.png"
    Image.fromarray(_scene(7)).save(image_path)
    det = Detector.load(trained_bundle, face_detector=ScriptedFaces(_box_track))
    sources = [str(image_path), str(good_video), str(bad_video), str(image_path)]
    preds = list(det.predict_many(sources, faces="only", sampling=FrameSampling(max_frames=4), batch_size=2))
    assert [p.path for p in preds] == sources
    assert [p.kind for p in preds] == ["image", "video", "video", "image"]
    assert preds[2].error and "b.mp4" in preds[2].error and preds[2].label is None
    assert preds[0].ok and preds[1].ok and preds[3].p_fake == pytest.approx(preds[0].p_fake)


def test_tracker_keeps_people_apart_and_ends_lost_tracks() -> None:
    tracker = FaceTracker(max_gap=2)
    left, right = (10.0, 10.0, 40.0, 40.0), (200.0, 10.0, 40.0, 40.0)
    assert tracker.update([left, right]) == [0, 1]
    assert tracker.update([(204.0, 12.0, 40.0, 40.0), (12.0, 11.0, 40.0, 40.0)]) == [1, 0]
    for _ in range(3):
        tracker.update([])
    assert tracker.update([left]) == [2], "a face gone longer than max_gap starts a new track"
    assert box_iou(left, left) == pytest.approx(1.0) and box_iou(left, right) == 0.0


def test_verdict_rules() -> None:
    assert aggregate_faces([0.1, 0.9, 0.3], "max") == pytest.approx(0.9)
    assert aggregate_faces([0.1, 0.9, 0.2], "mean") == pytest.approx(0.4)
    assert track_score([0.1, 0.9, 0.8, 0.2, 0.7]) == pytest.approx(0.8)
    assert track_score([0.4]) == pytest.approx(0.4)
    assert video_score([0.2, 0.7, 0.1]) == pytest.approx(0.7)
    for bad in (lambda: aggregate_faces([], "max"), lambda: track_score([]), lambda: video_score([])):
        with pytest.raises(InvalidArgumentError):
            bad()


def test_cli_predict_video_and_image_with_annotations(
    trained_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _moving_face_video(folder / "clip.webm", frames=10)
    Image.fromarray(_scene(8)).save(folder / "photo.png")
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really")
    annotate, crops = tmp_path / "annotated", tmp_path / "crops"
    code = main(
        [
            "predict",
            str(folder),
            "--model",
            str(trained_bundle),
            "--format",
            "jsonl",
            "--faces",
            "off",
            "--max-frames",
            "4",
            "--annotate",
            str(annotate),
            "--save-crops",
            str(crops),
            "--quiet",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 2, err
    rows = {Path(r["path"]).name: r for r in map(json.loads, out.splitlines())}
    assert rows["clip.webm"]["kind"] == "video" and rows["clip.webm"]["video"]["frames_sampled"] == 4
    assert rows["photo.png"]["kind"] == "image" and rows["photo.png"]["label"] in ("real", "fake")
    assert rows["broken.mp4"]["error"] and "broken.mp4" in err
    written = sorted(p.name for p in annotate.iterdir())
    assert any(n.startswith("photo-") and n.endswith("_image.jpg") for n in written)
    assert any(n.startswith("clip-") and n.endswith("_timeline.png") for n in written)
    assert any(n.startswith("clip-") and "_frame" in n for n in written)
    assert list(crops.iterdir()) == [], "faces off: no face crops"
