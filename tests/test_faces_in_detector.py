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


def test_lost_track_ends_and_short_tracks_do_not_decide(trained_bundle: Path, tmp_path: Path) -> None:
    video = _moving_face_video(tmp_path / "gap.mp4", frames=20)
    calls = {"n": 0}

    def boxes(image: np.ndarray) -> list[FaceBox]:
        calls["n"] += 1
        i = calls["n"] - 1
        if 6 <= i < 13:  # the person leaves for 7 sampled frames, longer than the tracker's max_gap of 5
            return [FaceBox(60, 60, 40, 40, 0.9)] if i == 8 else []  # one spurious detection meanwhile
        return [FaceBox(20, 30, 56, 56, 0.99)]

    det = Detector.load(trained_bundle, face_detector=ScriptedFaces(boxes))
    pred = det.predict(video, faces="only", sampling=FrameSampling(every_n=1))
    tracks = {t.track: t for t in pred.video.tracks}
    assert sorted(t.n_frames for t in tracks.values()) == [1, 6, 7], "before, spurious, after"
    long_tracks = [t for t in tracks.values() if t.n_frames > 1]
    assert pred.p_fake == pytest.approx(max(t.p_fake for t in long_tracks)), "the one-frame track does not decide"


def test_video_with_only_too_small_faces_gets_no_verdict(trained_bundle: Path, tmp_path: Path) -> None:
    video = _moving_face_video(tmp_path / "tiny.mp4", frames=8)
    det = Detector.load(_face_bundle(trained_bundle, tmp_path), face_detector=ScriptedFaces(lambda im: [THREE[2]]))
    pred = det.predict(video, sampling=FrameSampling(max_frames=4))
    assert pred.label is None and pred.scored_on == "nothing" and "too small" in pred.note
    assert all(f.p_fake is None for f in pred.video.timeline)


def test_crops_reach_the_sink_on_the_calling_thread(trained_bundle: Path) -> None:
    import threading

    det = Detector.load(trained_bundle, face_detector=ScriptedFaces(lambda image: list(THREE)))
    threads: set[str] = set()
    list(
        det.predict_many(
            [_scene(i) for i in range(4)],
            faces="only",
            workers=2,
            on_crop=lambda path, name, crop: threads.add(threading.current_thread().name),
        )
    )
    assert threads == {threading.current_thread().name}


def test_bad_videos_in_a_folder_run(trained_bundle: Path, tmp_path: Path) -> None:
    from media_factory import write_audio_only, write_video

    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    audio = write_audio_only(tmp_path / "audio.mp4")
    rotated = write_video(tmp_path / "phone.mp4", frames=10, width=96, height=64, rotation=90)
    good = tmp_path / "still.png"
    Image.fromarray(_scene(9)).save(good)
    det = Detector.load(trained_bundle)
    sources = [str(empty), str(good), str(audio), str(rotated)]
    preds = list(det.predict_many(sources, sampling=FrameSampling(max_frames=3)))
    assert [p.path for p in preds] == sources
    assert "empty.mp4" in preds[0].error and "audio.mp4" in preds[2].error and "video stream" in preds[2].error
    assert preds[1].ok and preds[3].ok
    assert (preds[3].video.width, preds[3].video.height, preds[3].video.rotation) == (64, 96, 90)


def test_evaluate_counts_inputs_without_a_verdict(trained_bundle: Path, tmp_path: Path, synthetic_test: Path) -> None:
    from deepfake_detector import evaluate

    # Faces in half of the images are too small: those images get no verdict and are counted, not fatal.
    tiny_on_odd = ScriptedFaces(lambda image: [THREE[2]] if int(image[0, 0, 0]) % 2 else [THREE[0]])
    det = Detector.load(trained_bundle, face_detector=tiny_on_odd)
    result = evaluate(det, synthetic_test, tmp_path / "r", faces="only", progress=False)
    m = result["sections"][0]["metrics"]
    assert m["n"] + m["n_failed"] == 48 and m["n_failed"] > 0
    assert all("no verdict" in e for e in result["sections"][0]["errors"])


def test_crop_faces_with_a_scripted_detector(tmp_path: Path) -> None:
    from deepfake_detector.face_crops import CROP_FILE, crop_faces_dataset

    src = tmp_path / "src"
    (src / "real").mkdir(parents=True)
    (src / "fake" / "Swap").mkdir(parents=True)
    image = _scene(10)
    Image.fromarray(image).save(src / "real" / "a.png")
    Image.fromarray(image).save(src / "real" / "a.jpg", quality=95)
    good = _moving_face_video(src / "fake" / "Swap" / "clip.mp4", frames=10)
    (src / "fake" / "Swap" / "cut.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    report = crop_faces_dataset(
        src,
        tmp_path / "dst",
        CropSpec(margin=0.1),
        face_detector=ScriptedFaces(lambda im: [THREE[0], THREE[2]]),
        sampling=FrameSampling(max_frames=2),
        progress=False,
    )
    names = sorted(p.name for p in (tmp_path / "dst").rglob("*.png"))
    assert names == ["a.jpg_face0.png", "a.png_face0.png", "clip.mp4_frame0_face0.png", "clip.mp4_frame5_face0.png"]
    assert (report.files, report.crops, report.failed) == (4, 4, 1), "the cut video gives no crops"
    crop = np.asarray(Image.open(tmp_path / "dst" / "real" / "a.png_face0.png"))
    assert np.array_equal(crop, crop_face(image, THREE[0], CropSpec(margin=0.1)))
    assert json.loads((tmp_path / "dst" / CROP_FILE).read_text())["face_detector"] == "scripted"


def test_crop_faces_refuses_an_output_inside_its_input(tmp_path: Path) -> None:
    from deepfake_detector.face_crops import crop_faces_dataset

    src = tmp_path / "src"
    (src / "real").mkdir(parents=True)
    Image.fromarray(_scene(11)).save(src / "real" / "a.png")
    (tmp_path / "taken").write_text("a file")
    detector = ScriptedFaces(lambda im: [THREE[0]])
    for dst, reason in (
        (src, "inside the folder"),
        (src / "real" / "crops", "inside the folder"),
        (tmp_path / "taken", "is a file"),
    ):
        with pytest.raises(InvalidArgumentError, match=reason):
            crop_faces_dataset(src, dst, CropSpec(), face_detector=detector, progress=False)
    assert sorted(p.name for p in src.rglob("*")) == ["a.png", "real"]  # nothing written into the data


def test_cli_faces_only_saves_crops_and_annotations(
    trained_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    pytest.importorskip("facenet_pytorch")
    photo = tmp_path / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(photo)
    crops, annotated = tmp_path / "crops", tmp_path / "annotated"
    code = main(
        [
            "predict",
            str(photo),
            "--model",
            str(trained_bundle),
            "--faces",
            "only",
            "--format",
            "jsonl",
            "--save-crops",
            str(crops),
            "--annotate",
            str(annotated),
            "--quiet",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    row = json.loads(out)
    assert row["scored_on"] == "faces" and len(row["faces"]) >= 1
    box = row["faces"][0]["box"]
    assert 140 < box["x"] + box["w"] / 2 < 300 and 20 < box["y"] + box["h"] / 2 < 200, "the astronaut's face"
    saved = sorted(crops.iterdir())
    assert len(saved) == len([f for f in row["faces"] if f["status"] == "scored"])
    assert Image.open(saved[0]).size[0] >= 32
    assert len(list(annotated.glob("astronaut-*_image.jpg"))) == 1


def test_uncertain_band_labels_close_calls_without_changing_scores(
    trained_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from deepfake_detector.annotate import draw_faces
    from deepfake_detector.threshold import label_for

    assert label_for(0.55, 0.5, band=0.1) == "uncertain" and label_for(0.65, 0.5, band=0.1) == "fake"
    assert label_for(0.45, 0.5) == "real"
    det = Detector.load(trained_bundle, face_detector=ScriptedFaces(lambda image: list(THREE)))
    image = _scene(11)
    sure = det.predict(image, faces="only", uncertain_band=0.0)
    wide = det.predict(image, faces="only", uncertain_band=0.499)
    assert wide.p_fake == pytest.approx(sure.p_fake)
    assert wide.label == ("uncertain" if abs(sure.p_fake - det.threshold) < 0.499 else sure.label)
    scored = [f for f in wide.faces if f.p_fake is not None]
    assert scored and all(
        f.label
        == ("uncertain" if abs(f.p_fake - det.threshold) < 0.499 else "fake" if f.p_fake >= det.threshold else "real")
        for f in scored
    )
    assert draw_faces(image, wide.faces, "caption").size == (image.shape[1], image.shape[0])
    with pytest.raises(InvalidArgumentError, match="uncertain band"):
        det.predict(image, uncertain_band=0.7)

    bundle = tmp_path / "banded"
    shutil.copytree(trained_bundle, bundle)
    config = json.loads((bundle / CONFIG_FILE).read_text())
    config["uncertain"] = {"band": 0.499}
    (bundle / CONFIG_FILE).write_text(json.dumps(config))
    photo = tmp_path / "p.png"
    Image.fromarray(image).save(photo)
    assert main(["predict", str(photo), "--model", str(bundle), "--format", "jsonl"]) == 0
    out, err = capsys.readouterr()
    row = json.loads(out)
    assert row["label"] == ("uncertain" if abs(row["p_fake"] - row["threshold"]) < 0.499 else row["label"])
    assert main(["predict", str(photo), "--model", str(bundle), "--uncertain-band", "0.6"]) == 1
    config["uncertain"] = {"band": 0.9}
    (bundle / CONFIG_FILE).write_text(json.dumps(config))
    assert main(["predict", str(photo), "--model", str(bundle)]) == 1
    assert "uncertain" in capsys.readouterr().err
