"""Detector: every input kind scores the same, many inputs stream in order, bad bundles are named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake_detector import Detector, Prediction
from deepfake_detector.bundle import CONFIG_FILE, WEIGHTS_FILE
from deepfake_detector.data.synthetic import synthetic_image
from deepfake_detector.errors import BundleError, InvalidArgumentError
from deepfake_detector.media.image import load_image
from deepfake_detector.threshold import confidence_for

TOL = 1e-6


@pytest.fixture(scope="module")
def detector(trained_bundle: Path) -> Detector:
    return Detector.load(trained_bundle, device="cpu")


@pytest.fixture(scope="module")
def odd_size_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fake image at a size the model does not take, so resizing is part of the path."""
    path = tmp_path_factory.mktemp("odd") / "odd size.png"
    Image.fromarray(synthetic_image(np.random.default_rng(5), 150, fake=True)[:, :110]).save(path)
    return path


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory, images: list[Path]) -> list[Path]:
    folder = tmp_path_factory.mktemp("bad")
    truncated = folder / "truncated.png"
    data = images[0].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    empty = folder / "empty.png"
    empty.write_bytes(b"")
    text = folder / "notes.jpg"
    text.write_text("this is a text file, not a JPEG\n")
    return [truncated, empty, text, folder / "missing.png"]


@pytest.fixture(scope="module")
def singles(detector: Detector, images: list[Path]) -> dict[Path, Prediction]:
    """``predict`` one by one, the reference the batched paths are compared with."""
    return {p: detector.predict(p) for p in images}


def test_load_gives_a_ready_detector(detector: Detector, trained_bundle: Path) -> None:
    assert detector.config.arch == "seed-cnn"
    assert detector.threshold == detector.config.threshold
    assert 0.0 <= detector.threshold <= 1.0
    assert not detector.model.training
    assert detector.name == trained_bundle.name
    summary = detector.summary()
    assert summary["arch"] == "seed-cnn" and summary["input_size"] == 128
    assert summary["threshold"] == detector.threshold


@pytest.mark.parametrize("which", ["test_image", "odd_size"])
def test_every_input_kind_gives_the_same_score(
    detector: Detector, images: list[Path], odd_size_png: Path, which: str
) -> None:
    path = images[1] if which == "test_image" else odd_size_png
    with Image.open(path) as im:
        im.load()
        pil = im.copy()
    array = np.asarray(pil.convert("RGB"))
    assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3

    by_str = detector.predict(str(path))
    results = {
        "str": by_str,
        "Path": detector.predict(path),
        "bytes": detector.predict(path.read_bytes()),
        "bytearray": detector.predict(bytearray(path.read_bytes())),
        "PIL": detector.predict(pil),
        "array": detector.predict(array),
    }
    for kind, pred in results.items():
        assert pred.ok, kind
        assert abs(pred.p_fake - by_str.p_fake) <= TOL, kind
        assert pred.label == by_str.label, kind
        assert pred.threshold == detector.threshold
        assert pred.model == detector.name
        assert pred.seconds >= 0
    assert results["str"].path == str(path) and results["Path"].path == str(path)
    assert results["bytes"].path is None and results["array"].path is None
    np.testing.assert_array_equal(np.asarray(pil), array)  # the caller's image is not modified


def test_label_and_confidence_follow_threshold(
    detector: Detector, images: list[Path], singles: dict[Path, Prediction]
) -> None:
    for path, pred in singles.items():
        assert pred.path == str(path)
        assert 0.0 <= pred.p_fake <= 1.0
        assert pred.label == ("fake" if pred.p_fake >= detector.threshold else "real")
        assert pred.confidence == pytest.approx(confidence_for(pred.p_fake, detector.threshold))
    at_zero = list(detector.predict_many(images, threshold=0.0, workers=1))
    assert all(p.label == "fake" and p.threshold == 0.0 for p in at_zero)
    assert all(p.confidence == pytest.approx(0.5 + 0.5 * p.p_fake) for p in at_zero)
    at_one = list(detector.predict_many(images, threshold=1.0, workers=1))
    assert all(p.label == ("fake" if p.p_fake >= 1.0 else "real") for p in at_one)
    # a score exactly at the threshold counts as fake
    path = images[0]
    assert detector.predict(path, threshold=singles[path].p_fake).label == "fake"


def test_model_separates_the_classes(singles: dict[Path, Prediction]) -> None:
    real = [pr.p_fake for p, pr in singles.items() if "/real/" in p.as_posix()]
    fake = [pr.p_fake for p, pr in singles.items() if "/fake/" in p.as_posix()]
    assert np.mean(fake) > np.mean(real)


def test_predict_many_keeps_order_and_reports_bad_inputs(
    detector: Detector, images: list[Path], bad_files: list[Path], singles: dict[Path, Prediction]
) -> None:
    sources: list[object] = []
    for i, good in enumerate(images):
        sources.append(good)
        if i < len(bad_files):
            sources.append(bad_files[i])
    sources.insert(0, str(bad_files[-1]))  # a bad one first, as a str
    preds = list(detector.predict_many(iter(sources), batch_size=3, workers=2))

    assert [p.path for p in preds] == [str(s) for s in sources]
    failed = [p for p in preds if not p.ok]
    assert len(failed) == len(bad_files) + 1
    for pred in failed:
        assert Path(pred.path).name in pred.error
        assert pred.label is None and pred.p_fake is None and pred.confidence is None
        assert pred.model == detector.name
    reasons = {Path(p.path).name: p.error for p in failed}
    assert "truncated" in reasons["truncated.png"]
    assert "empty" in reasons["empty.png"]
    assert "not an image" in reasons["notes.jpg"]
    assert "no such file" in reasons["missing.png"]

    ok = [p for p in preds if p.ok]
    assert len(ok) == len(images)
    for pred in ok:
        single = singles[Path(pred.path)]
        assert abs(pred.p_fake - single.p_fake) <= TOL, pred.path
        assert pred.label == single.label
        assert pred.error is None


def test_predict_many_in_memory_inputs_and_batch_sizes(
    detector: Detector, images: list[Path], singles: dict[Path, Prediction]
) -> None:
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in images]
    expected = [singles[p].p_fake for p in images]
    for batch_size, workers in ((1, 1), (3, 2), (64, None)):
        preds = list(detector.predict_many(arrays, batch_size=batch_size, workers=workers, threshold=0.3))
        assert len(preds) == len(arrays)
        for pred, p in zip(preds, expected):
            assert pred.path is None
            assert abs(pred.p_fake - p) <= TOL
            assert pred.threshold == 0.3
            assert pred.label == ("fake" if pred.p_fake >= 0.3 else "real")
    assert list(detector.predict_many([])) == []


@pytest.mark.parametrize("threshold", [1.5, -0.1, float("nan"), "0.5"])
def test_threshold_out_of_range_is_refused(detector: Detector, images: list[Path], threshold: object) -> None:
    with pytest.raises(InvalidArgumentError, match="threshold"):
        detector.predict(images[0], threshold=threshold)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="threshold"):
        list(detector.predict_many(images[:2], threshold=threshold))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        list(detector.predict_many(images[:2], batch_size=0))


def test_prediction_dict_and_json_round_trip(
    detector: Detector, images: list[Path], bad_files: list[Path], singles: dict[Path, Prediction]
) -> None:
    good = singles[images[0]]
    bad = next(iter(detector.predict_many([bad_files[0]])))
    for pred in (good, bad):
        d = pred.to_dict()
        assert {"path", "label", "p_fake", "confidence", "seconds", "error", "faces", "video"} <= set(d)
        assert json.loads(pred.to_json()) == d
        assert Prediction.from_dict(json.loads(pred.to_json())) == pred
        assert set(pred.summary()) == set(Prediction.summary_fields())
    assert json.loads(bad.to_json())["p_fake"] is None
    assert json.loads(bad.to_json())["error"] == bad.error


def _copy_bundle(src: Path, dst: Path, **changes: object) -> Path:
    shutil.copytree(src, dst)
    config = json.loads((dst / CONFIG_FILE).read_text())
    config.update(changes)
    (dst / CONFIG_FILE).write_text(json.dumps(config))
    return dst


def test_logit_real_bundle_still_reports_p_fake(trained_bundle: Path, tmp_path: Path, images: list[Path]) -> None:
    """Same weights, logit declared as log-odds of real: p_fake must be the complement."""
    flipped = Detector.load(
        _copy_bundle(trained_bundle, tmp_path / "flipped", output="logit_real", threshold=0.5), device="cpu"
    )
    straight = Detector.load(_copy_bundle(trained_bundle, tmp_path / "straight", threshold=0.5), device="cpu")
    assert flipped.config.output == "logit_real" and straight.config.output == "logit_fake"
    ps = np.array([p.p_fake for p in straight.predict_many(images, batch_size=8, workers=1)])
    pf = np.array([p.p_fake for p in flipped.predict_many(images, batch_size=8, workers=1)])
    np.testing.assert_allclose(pf, 1.0 - ps, rtol=0, atol=TOL)
    assert np.corrcoef(ps, pf)[0, 1] < -0.99  # not trivially constant scores
    one = flipped.predict(images[1])
    assert abs(one.p_fake - pf[1]) <= TOL
    assert one.label == ("fake" if one.p_fake >= 0.5 else "real")
    assert one.confidence == pytest.approx(max(one.p_fake, 1.0 - one.p_fake))  # at 0.5: the label's probability


# --------------------------------------------------------------------------- broken bundles


def test_load_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-bundle"
    with pytest.raises(BundleError) as info:
        Detector.load(missing)
    assert str(missing) in str(info.value)


def test_load_folder_without_config(tmp_path: Path, trained_bundle: Path) -> None:
    folder = tmp_path / "weights-only"
    folder.mkdir()
    shutil.copy(trained_bundle / WEIGHTS_FILE, folder / WEIGHTS_FILE)
    with pytest.raises(BundleError) as info:
        Detector.load(folder)
    assert str(folder) in str(info.value) and CONFIG_FILE in str(info.value)


def test_load_folder_without_weights(tmp_path: Path, trained_bundle: Path) -> None:
    folder = tmp_path / "config-only"
    folder.mkdir()
    shutil.copy(trained_bundle / CONFIG_FILE, folder / CONFIG_FILE)
    with pytest.raises(BundleError) as info:
        Detector.load(folder)
    assert str(folder) in str(info.value) and WEIGHTS_FILE in str(info.value)


def test_load_bad_json(tmp_path: Path, trained_bundle: Path) -> None:
    folder = shutil.copytree(trained_bundle, tmp_path / "bad-json")
    (folder / CONFIG_FILE).write_text('{"arch": "seed-cnn", ')
    with pytest.raises(BundleError) as info:
        Detector.load(folder)
    assert str(folder / CONFIG_FILE) in str(info.value)
    assert "JSON" in str(info.value)


def test_load_config_without_arch(tmp_path: Path, trained_bundle: Path) -> None:
    folder = shutil.copytree(trained_bundle, tmp_path / "no-arch")
    config = json.loads((folder / CONFIG_FILE).read_text())
    del config["arch"]
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(BundleError) as info:
        Detector.load(folder)
    assert str(folder / CONFIG_FILE) in str(info.value)
    assert "arch" in str(info.value)


def test_load_weights_that_do_not_fit(tmp_path: Path, trained_bundle: Path) -> None:
    # the same architecture at another input size has a differently shaped dense layer
    folder = _copy_bundle(trained_bundle, tmp_path / "misfit", arch_kwargs={"input_size": 64})
    with pytest.raises(BundleError) as info:
        Detector.load(folder)
    assert str(folder / WEIGHTS_FILE) in str(info.value)
    assert "seed-cnn" in str(info.value)


def test_load_unreadable_weights(tmp_path: Path, trained_bundle: Path) -> None:
    folder = shutil.copytree(trained_bundle, tmp_path / "garbage")
    (folder / WEIGHTS_FILE).write_bytes(b"\x00" * 64)
    with pytest.raises(BundleError) as info:
        Detector.load(folder)
    assert str(folder / WEIGHTS_FILE) in str(info.value)


def test_whole_images_decode_at_reduced_scale_and_score_alike(detector: Detector, tmp_path: Path) -> None:
    """A large JPEG scored whole is decoded at a reduced scale (twice the model's input at
    least), the same way on every path (kept media included), close to the full decode's
    p_fake; face crops are cut from the full-size picture."""
    assert detector.decode_size("off") == 2 * detector.preprocessing.input_size
    assert detector.decode_size("only") is None
    rng = np.random.default_rng(11)
    paths = []
    for i, fake in enumerate([False, True, False, True]):
        picture = Image.fromarray(synthetic_image(rng, 150, fake=fake)).resize((1200, 900), Image.Resampling.BICUBIC)
        paths.append(tmp_path / f"big{i}.jpg")
        picture.save(paths[-1], quality=95)
    full = detector.score_batch([load_image(p) for p in paths])
    fast = np.array([p.p_fake for p in detector.predict_many(paths, faces="off")])
    np.testing.assert_allclose(fast, full, atol=0.03)
    kept = list(detector.predict_many(paths, faces="off", keep_media=True))
    np.testing.assert_array_equal([p.p_fake for p in kept], fast)
    assert kept[0].artifacts.images[0][1].shape[:2] == (450, 600)  # what was scored is what is shown
    assert detector.predict(paths[0], faces="off").p_fake == pytest.approx(fast[0], abs=1e-6)
    assert detector.predict(paths[0].read_bytes(), faces="off", keep_media=True).p_fake == pytest.approx(
        fast[0], abs=1e-6
    )
