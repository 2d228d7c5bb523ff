"""crop-faces makes training data with the crop prediction uses, and train records that crop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from media_factory import write_video_of
from PIL import Image

from deepfake_detector import Detector
from deepfake_detector.bundle import CONFIG_FILE
from deepfake_detector.cli import main
from deepfake_detector.face_crops import CROP_FILE, face_crops, read_crop_record
from deepfake_detector.faces import create_face_detector
from deepfake_detector.faces.crop import CropSpec
from deepfake_detector.media.image import load_image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "face_photos"
pytestmark = pytest.mark.skipif(not (SHARED / "single").is_dir(), reason="../shared/data/face_photos is not here")
pytest.importorskip("facenet_pytorch")


def _portraits(n: int) -> list[Path]:
    return sorted((SHARED / "single").glob("*.jpg"))[:n]


@pytest.fixture(scope="module")
def media_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """real/ with two portraits and a no-face scene; fake/Swap/ with a portrait and a short video of one."""
    root = tmp_path_factory.mktemp("media")
    portraits = _portraits(3)
    (root / "real").mkdir(parents=True)
    (root / "fake" / "Swap").mkdir(parents=True)
    for p in portraits[:2]:
        Image.open(p).save(root / "real" / p.name)
    Image.fromarray(np.full((200, 300, 3), 120, np.uint8)).save(root / "real" / "wall.png")
    Image.open(portraits[2]).save(root / "fake" / "Swap" / portraits[2].name)
    frame = load_image(portraits[2])
    frame = frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2]
    small = np.asarray(Image.fromarray(frame).resize((frame.shape[1] // 2 // 2 * 2, frame.shape[0] // 2 // 2 * 2)))
    write_video_of(root / "fake" / "Swap" / "clip.mp4", [small] * 6, fps=6)
    (root / "fake" / "Swap" / "broken.mp4").write_bytes(b"not a video")
    return root


def test_crop_faces_keeps_layout_and_matches_prediction_crops(
    media_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dst = tmp_path / "faces"
    code = main(["crop-faces", str(media_tree), str(dst), "--margin", "0.25", "--max-frames", "2", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "broken.mp4" in err, "one bad file: reported, the rest cropped"
    real = sorted(p.name for p in (dst / "real").iterdir())
    fake = sorted(p.name for p in (dst / "fake" / "Swap").iterdir())
    assert len(real) >= 2 and all("_face" in n for n in real) and not any(n.startswith("wall") for n in real)
    assert any(n.startswith("clip.mp4_frame0_face") for n in fake)
    record = json.loads((dst / CROP_FILE).read_text())
    assert record["crop"] == {"margin": 0.25, "square": True}
    assert read_crop_record(dst) == (CropSpec(margin=0.25), "mtcnn")

    # The crop written for a photo is the crop prediction makes of it.
    portrait = sorted((media_tree / "real").glob("*.jpg"))[0]
    image = load_image(portrait)
    expected = face_crops(image, create_face_detector("auto"), CropSpec(margin=0.25), 32)[0][1]
    written = np.asarray(Image.open(dst / "real" / f"{portrait.name}_face0.png"))
    assert written.shape == expected.shape and np.array_equal(written, expected)


def test_training_on_crops_records_the_crop(media_tree: Path, tmp_path: Path, synthetic_train: Path) -> None:
    dst = tmp_path / "faces"
    assert main(["crop-faces", str(media_tree), str(dst), "--margin", "0.4", "--max-frames", "3", "--quiet"]) == 2
    bundle = tmp_path / "bundle"
    assert (
        main(
            [
                "train",
                str(dst),
                "--out",
                str(bundle),
                "--epochs",
                "1",
                "--workers",
                "0",
                "--quiet",
                "--val-dir",
                str(synthetic_train),
                "--batch-size",
                "4",
            ]
        )
        == 0
    )
    config = json.loads((bundle / CONFIG_FILE).read_text())
    assert config["preprocessing"]["crop"] == {"margin": 0.4, "square": True}
    assert config["preprocessing"]["face_detector"] == "mtcnn"
    det = Detector.load(bundle)
    assert det.uses_faces("auto")
    pred = det.predict(sorted((media_tree / "real").glob("*.jpg"))[0])
    assert pred.scored_on == "faces" and pred.faces and pred.faces[0].p_fake is not None
    margin = tmp_path / "margin"
    assert (
        main(
            [
                "train",
                str(synthetic_train),
                "--out",
                str(margin),
                "--epochs",
                "1",
                "--workers",
                "0",
                "--quiet",
                "--crop-margin",
                "0.1",
            ]
        )
        == 0
    )
    assert json.loads((margin / CONFIG_FILE).read_text())["preprocessing"]["crop"]["margin"] == 0.1
