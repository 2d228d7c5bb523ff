"""Ensembles: several bundles behind one Detector, their p_fake combined, built from validation data.

Members are made from the session's trained bundle: its weights with noise added (another
informative model), or the same weights behind another preprocessing (another input path).
Every expectation is computed from the members' own Detectors, never from the ensemble code.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from doubles import FixedFaces
from media_factory import write_video_of
from PIL import Image

from deepfake_detector import Detector
from deepfake_detector.bundle import CONFIG_FILE, WEIGHTS_FILE, load_bundle, save_bundle
from deepfake_detector.cli import main
from deepfake_detector.data.dataset import load_dataset
from deepfake_detector.data.synthetic import synthetic_image
from deepfake_detector.ensemble import ENSEMBLE_FILE, EnsembleConfig, read_ensemble, save_ensemble
from deepfake_detector.ensembling import build_ensemble, fit_combination
from deepfake_detector.errors import BundleError, DatasetError, InvalidArgumentError
from deepfake_detector.faces.base import FaceBox
from deepfake_detector.faces.crop import CropSpec
from deepfake_detector.media.video import FrameSampling
from deepfake_detector.threshold import choose_threshold

TOL = 1e-6
BOXES = [FaceBox(10, 10, 60, 60, 0.99), FaceBox(70, 60, 64, 64, 0.9)]


def _derive(src: Path, dst: Path, *, noise: float = 0.0, **preprocessing: Any) -> Path:
    """A bundle from ``src``: its weights plus seeded noise, and its preprocessing with ``preprocessing`` changed."""
    config, model = load_bundle(src)
    if noise:
        generator = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn(param.shape, generator=generator) * noise * param.abs().mean())
    config = replace(config, name=dst.name, preprocessing=replace(config.preprocessing, **preprocessing))
    return save_bundle(dst, config, model)


def _ensemble(out: Path, bundles: list[Path], combine: str = "mean", **fields: Any) -> Path:
    names = [f"m{i}" for i in range(len(bundles))]
    return save_ensemble(out, EnsembleConfig(members=names, combine=combine, **fields), bundles)


@pytest.fixture(scope="module")
def members(trained_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``a``: the trained bundle; ``noisy``: its weights with noise; ``other_prep``: its weights
    behind other normalisation and interpolation; ``*_faces``: the same, trained on face crops."""
    root = tmp_path_factory.mktemp("members")
    crop = CropSpec(margin=0.2)
    other = {"mean": (0.1, 0.1, 0.1), "std": (0.8, 0.8, 0.8), "interpolation": "bicubic"}
    return {
        "a": trained_bundle,
        "noisy": _derive(trained_bundle, root / "noisy", noise=0.3),
        "other_prep": _derive(trained_bundle, root / "other_prep", **other),
        "a_faces": _derive(trained_bundle, root / "a_faces", crop=crop),
        "noisy_faces": _derive(trained_bundle, root / "noisy_faces", noise=0.3, crop=crop),
        "other_prep_faces": _derive(trained_bundle, root / "other_prep_faces", crop=crop, **other),
    }


@pytest.fixture(scope="module")
def val_data(synthetic_test: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CSV manifest of the test images: the form of validation data evaluate also takes."""
    manifest = tmp_path_factory.mktemp("val") / "val.csv"
    rows = ["path,label"] + [
        f"{p},{label}" for label in ("real", "fake") for p in sorted((synthetic_test / label).rglob("*.png"))
    ]
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def _p(detector: Detector, sources: list[Any], **kw: Any) -> np.ndarray:
    return np.array([pred.p_fake for pred in detector.predict_many(sources, workers=2, batch_size=5, **kw)])


# --------------------------------------------------------------------------- combined scores


def test_mean_of_identical_members_is_the_member(members: dict[str, Path], images: list[Path], tmp_path: Path) -> None:
    single = Detector.load(members["a"], device="cpu")
    ens = Detector.load(
        _ensemble(tmp_path / "twins", [members["a"], members["a"]], threshold=single.threshold), device="cpu"
    )
    assert len(ens.members) == 2 and ens.threshold == single.threshold
    expected = _p(single, images)
    np.testing.assert_allclose(_p(ens, images), expected, rtol=0, atol=TOL)
    for path, p in zip(images, expected):
        pred = ens.predict(path)
        assert pred.p_fake == pytest.approx(p, abs=TOL)
        assert pred.label == single.predict(path).label and pred.model == "twins"


@pytest.mark.parametrize("other", ["noisy", "other_prep"])
def test_mean_of_two_members_whole_images(
    members: dict[str, Path], images: list[Path], tmp_path: Path, other: str
) -> None:
    a, b = Detector.load(members["a"], device="cpu"), Detector.load(members[other], device="cpu")
    pa, pb = _p(a, images), _p(b, images)
    assert np.abs(pa - pb).max() > 1e-3, "the members must differ for this test to mean anything"
    ens = Detector.load(_ensemble(tmp_path / "e", [members["a"], members[other]]), device="cpu")
    np.testing.assert_allclose(_p(ens, images), (pa + pb) / 2, rtol=0, atol=TOL)
    singles = [ens.predict(path, faces="off") for path in images]
    np.testing.assert_allclose([s.p_fake for s in singles], (pa + pb) / 2, rtol=0, atol=TOL)
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in images]
    np.testing.assert_allclose(ens.score_batch(arrays), (pa + pb) / 2, rtol=0, atol=TOL)
    # The re-encoding check scores copies in the same batches; p_fake stays the input's own.
    np.testing.assert_allclose(_p(ens, images, reencode_check=True), (pa + pb) / 2, rtol=0, atol=TOL)


@pytest.mark.parametrize("other", ["noisy_faces", "other_prep_faces"])
def test_mean_of_two_members_on_faces(members: dict[str, Path], tmp_path: Path, other: str) -> None:
    def load(path: Path) -> Detector:
        return Detector.load(path, device="cpu", face_detector=FixedFaces(BOXES))

    a, b = load(members["a_faces"]), load(members[other])
    ens = load(_ensemble(tmp_path / "e", [members["a_faces"], members[other]]))
    scenes = [synthetic_image(np.random.default_rng(i), 160, fake=i % 2 == 1) for i in range(4)]
    for many, pa, pb in zip(ens.predict_many(scenes, workers=2), a.predict_many(scenes), b.predict_many(scenes)):
        assert many.scored_on == "faces" and len(many.faces) == 2
        face_means = [(fa.p_fake + fb.p_fake) / 2 for fa, fb in zip(pa.faces, pb.faces)]
        assert abs(pa.faces[0].p_fake - pb.faces[0].p_fake) > 1e-4
        assert [f.p_fake for f in many.faces] == pytest.approx(face_means, abs=TOL)
        assert many.p_fake == pytest.approx(max(face_means), abs=TOL), "faces combine first, then the image's max"
        assert [f.label for f in many.faces] == [("fake" if p >= ens.threshold else "real") for p in face_means]
    # With one face per image, the image's p_fake is the mean of the members' image p_fake.
    one = [
        Detector.load(path, device="cpu", face_detector=FixedFaces(BOXES[:1])).predict(scenes[1]).p_fake
        for path in (tmp_path / "e", members["a_faces"], members[other])
    ]
    assert one[0] == pytest.approx((one[1] + one[2]) / 2, abs=TOL)


def test_video_frames_take_the_combined_score(members: dict[str, Path], tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    video = write_video_of(tmp_path / "clip.mp4", [synthetic_image(rng, 96, fake=True) for _ in range(4)])
    sampling = FrameSampling(max_frames=4)
    a = Detector.load(members["a"], device="cpu").predict(video, sampling=sampling)
    b = Detector.load(members["other_prep"], device="cpu").predict(video, sampling=sampling)
    ens = Detector.load(_ensemble(tmp_path / "e", [members["a"], members["other_prep"]]), device="cpu")
    pred = ens.predict(video, sampling=sampling)
    assert pred.kind == "video" and pred.video is not None and len(pred.video.timeline) == 4
    expected = [(fa.p_fake + fb.p_fake) / 2 for fa, fb in zip(a.video.timeline, b.video.timeline)]
    assert [f.p_fake for f in pred.video.timeline] == pytest.approx(expected, abs=TOL)


def test_logistic_rule_applies_to_each_members_logit(
    members: dict[str, Path], images: list[Path], tmp_path: Path
) -> None:
    pa = _p(Detector.load(members["a"], device="cpu"), images)
    pb = _p(Detector.load(members["other_prep"], device="cpu"), images)
    coefficients, intercept = [0.8, -0.3], 0.25
    ens = Detector.load(
        _ensemble(
            tmp_path / "e",
            [members["a"], members["other_prep"]],
            "logistic",
            coefficients=coefficients,
            intercept=intercept,
        ),
        device="cpu",
    )

    def logit(p: np.ndarray) -> np.ndarray:
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))

    z = intercept + coefficients[0] * logit(pa) + coefficients[1] * logit(pb)
    np.testing.assert_allclose(_p(ens, images), 1 / (1 + np.exp(-z)), rtol=0, atol=TOL)


def test_summary_and_config_come_from_the_ensemble(members: dict[str, Path], tmp_path: Path) -> None:
    folder = _ensemble(
        tmp_path / "e",
        [members["a"], members["other_prep"]],
        threshold=0.3,
        uncertain={"band": 0.05, "reencode": None},
        name="duo",
        metrics={"validation": {"roc_auc_score": 0.9}},
        training={"val_data": "val.csv"},
    )
    ens = Detector.load(folder, device="cpu")
    assert ens.name == "duo" and ens.threshold == 0.3 and ens.config.reencode is None
    summary = ens.summary()
    assert summary["arch"] == "ensemble" and summary["combine"] == "mean" and summary["threshold"] == 0.3
    assert summary["validation_roc_auc_score"] == 0.9 and summary["combined_on"] == "val.csv"
    assert summary["members"] == ["m0 (seed-cnn, 128 px)", "m1 (seed-cnn, 128 px)"]
    assert summary["input_size"] == 128 and summary["input"] == "whole images"
    pred = ens.predict(synthetic_image(np.random.default_rng(1), 128, fake=False), uncertain_band=0.49)
    assert pred.threshold == 0.3 and pred.model == "duo" and pred.label == "uncertain"
    assert not ens.model.training and [m.name for m in ens.members] == ["m0", "m1"]


def test_detector_refuses_a_model_for_an_ensemble_config(members: dict[str, Path]) -> None:
    config, model = load_bundle(members["a"])
    with pytest.raises(InvalidArgumentError, match="one member per name"):
        Detector(EnsembleConfig(members=["x", "y"]), model)
    with pytest.raises(InvalidArgumentError, match="takes its model"):
        Detector(config)


# --------------------------------------------------------------------------- building


def test_fit_combination_weighs_informative_members_up() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    good = 1 / (1 + np.exp(-(3 * (2 * y - 1) + rng.normal(0, 1.5, y.size))))
    noise = rng.uniform(0, 1, y.size)
    fitted = fit_combination("logistic", y, np.stack([good, noise]))
    coefficients = fitted["coefficients"]
    assert coefficients[0] > 0.3 and abs(coefficients[1]) < coefficients[0] / 5
    assert fit_combination("mean", y, np.stack([good, noise])) == {}
    with pytest.raises(InvalidArgumentError, match="'combine'.*median"):
        fit_combination("median", y, np.stack([good]))


@pytest.mark.parametrize("combine", ["mean", "logistic"])
def test_build_ensemble(
    members: dict[str, Path], val_data: Path, images: list[Path], tmp_path: Path, combine: str
) -> None:
    out = build_ensemble(
        [members["a"], members["noisy"]], val_data, tmp_path / "built", combine=combine, workers=2, progress=False
    )
    config = read_ensemble(out)
    assert config.members == [members["a"].name, "noisy"] and config.combine == combine
    assert 0.0 <= config.threshold <= 1.0
    for name in config.members:
        assert (out / name / CONFIG_FILE).is_file() and (out / name / WEIGHTS_FILE).is_file()
    validation = config.metrics["validation"]
    assert validation["n"] == 48 and validation["roc_auc_score"] > 0.7
    assert set(config.metrics["members"]) == set(config.members)
    assert config.training["val_data"] == str(val_data) and config.training["n_scored"] == 48
    if combine == "logistic":
        assert all(c > 0 for c in config.coefficients), "informative members get positive weights"
        assert config.training["fit"].startswith("scikit-learn LogisticRegression")
    else:
        assert config.coefficients is None and config.intercept is None

    # The stored threshold is the one the rule picks on the combined validation scores.
    ens = Detector.load(out, device="cpu")
    samples = load_dataset(val_data)
    p = _p(ens, [s.path for s in samples])
    assert config.threshold == pytest.approx(choose_threshold(np.array([s.target for s in samples]), p), abs=1e-6)


def test_build_numbers_clashing_member_names(members: dict[str, Path], val_data: Path, tmp_path: Path) -> None:
    out = build_ensemble([members["a"], members["a"]], val_data, tmp_path / "e", progress=False, workers=1)
    name = members["a"].name
    assert read_ensemble(out).members == [name, f"{name}-2"]


def test_build_refuses_bad_inputs(members: dict[str, Path], val_data: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="'combine'.*'median'"):
        build_ensemble([members["a"]], val_data, tmp_path / "x", combine="median", progress=False)
    with pytest.raises(InvalidArgumentError, match="at least one member"):
        build_ensemble([], val_data, tmp_path / "x", progress=False)
    with pytest.raises(BundleError) as info:
        build_ensemble([members["a"], members["a_faces"]], val_data, tmp_path / "x", progress=False)
    assert str(members["a_faces"]) in str(info.value) and "face crop" in str(info.value)
    nested = _ensemble(tmp_path / "nested", [members["a"]])
    with pytest.raises(BundleError, match=r"nested: is an ensemble"):
        build_ensemble([members["a"], nested], val_data, tmp_path / "x", progress=False)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match=r"busy: exists and is not an ensemble \(it holds notes.txt\)"):
        build_ensemble([members["a"]], val_data, busy, progress=False)
    only_fakes = tmp_path / "fakes.csv"
    only_fakes.write_text(
        "path,label\n" + "".join(f"{line.split(',')[0]},fake\n" for line in val_data.read_text().splitlines()[1:4])
    )
    with pytest.raises(DatasetError, match=r"fakes\.csv: .*both classes.*0 real and 3 fake"):
        build_ensemble([members["a"]], only_fakes, tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- the file format


def test_ensemble_json_round_trip(members: dict[str, Path], tmp_path: Path) -> None:
    config = EnsembleConfig(
        members=["m0", "m1"],
        combine="logistic",
        coefficients=[1.5, 0.25],
        intercept=-0.5,
        threshold=0.42,
        uncertain={"band": 0.02, "reencode": {"jpeg_qualities": [75], "scales": [0.5]}},
        name="pair",
        training={"val_data": "v.csv"},
        metrics={"validation": {"roc_auc_score": 0.93}},
    )
    folder = save_ensemble(tmp_path / "pair", config, [members["a"], members["noisy"]])
    raw = json.loads((folder / ENSEMBLE_FILE).read_text())
    assert next(iter(raw)) == "format_version" and raw["format_version"] == 1
    assert read_ensemble(folder) == config
    assert EnsembleConfig.from_dict(config.to_dict()) == config
    assert read_ensemble(folder).reencode.names == ["JPEG q75", "rescale 0.5x"]


def test_saving_over_an_ensemble_replaces_it_and_keeps_other_files(members: dict[str, Path], tmp_path: Path) -> None:
    folder = _ensemble(tmp_path / "e", [members["a"], members["noisy"]])
    (folder / "report.md").write_text("kept")
    save_ensemble(folder, EnsembleConfig(members=["solo"]), [members["other_prep"]])
    assert sorted(p.name for p in folder.iterdir()) == [ENSEMBLE_FILE, "report.md", "solo"]
    assert read_ensemble(folder).members == ["solo"]
    assert not list(tmp_path.glob(".e.*")), "no temporary folder is left behind"


def _edit_json(key: str, value: Any) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        raw = json.loads((folder / ENSEMBLE_FILE).read_text())
        raw[key] = value
        (folder / ENSEMBLE_FILE).write_text(json.dumps(raw))

    return edit


def _other_crop(folder: Path) -> None:
    config = json.loads((folder / "m1" / CONFIG_FILE).read_text())
    config["preprocessing"]["crop"] = {"margin": 0.5, "square": True}
    (folder / "m1" / CONFIG_FILE).write_text(json.dumps(config))


BROKEN = {
    "missing member folder": (
        lambda f: shutil.rmtree(f / "m1"),
        ENSEMBLE_FILE,
        r"member 'm1' not found \(no folder .*m1\)",
    ),
    "member with another crop": (
        _other_crop,
        ENSEMBLE_FILE,
        r"member 'm1' has face crop margin 0.5, square but member 'm0' has none \(whole images\)",
    ),
    "unknown combine mode": (
        _edit_json("combine", "median"),
        ENSEMBLE_FILE,
        r"combine must be one of \('mean', 'logistic'\); got 'median'",
    ),
    "malformed JSON": (
        lambda f: (f / ENSEMBLE_FILE).write_text('{"members": ["m0",'),
        ENSEMBLE_FILE,
        "unreadable JSON",
    ),
    "empty members": (_edit_json("members", []), ENSEMBLE_FILE, "members must be a non-empty list"),
    "no members key": (
        lambda f: (f / ENSEMBLE_FILE).write_text('{"combine": "mean"}'),
        ENSEMBLE_FILE,
        "missing required key 'members'",
    ),
    "coefficient count": (
        lambda f: (
            _edit_json("combine", "logistic")(f),
            _edit_json("coefficients", [1.0])(f),
            _edit_json("intercept", 0.0)(f),
        ),
        ENSEMBLE_FILE,
        r"one coefficient per member: 2 member\(s\) but 1 coefficient\(s\)",
    ),
    "logistic without intercept": (
        lambda f: (_edit_json("combine", "logistic")(f), _edit_json("coefficients", [1.0, 1.0])(f)),
        ENSEMBLE_FILE,
        "needs an intercept",
    ),
    "coefficients with mean": (_edit_json("coefficients", [1.0, 1.0]), ENSEMBLE_FILE, "belong to combine 'logistic'"),
    "member outside the folder": (
        _edit_json("members", ["m0", "../m1"]),
        ENSEMBLE_FILE,
        r"folder names inside the ensemble folder; got '\.\./m1'",
    ),
    "repeated member": (_edit_json("members", ["m0", "m0"]), ENSEMBLE_FILE, "must not repeat"),
    "threshold out of range": (
        _edit_json("threshold", 1.5),
        ENSEMBLE_FILE,
        r"threshold must be a number in \[0, 1\]; got 1.5",
    ),
    "bad uncertain rule": (_edit_json("uncertain", {"band": 0.7}), ENSEMBLE_FILE, "uncertain: .*band"),
    "newer format": (_edit_json("format_version", 99), ENSEMBLE_FILE, "ensemble format 99 is newer"),
    "member's broken weights": (
        lambda f: (f / "m1" / WEIGHTS_FILE).write_bytes(b"\0" * 8),
        f"m1/{WEIGHTS_FILE}",
        "unreadable weights",
    ),
    "member is an ensemble": (
        lambda f: (f / "m1" / ENSEMBLE_FILE).write_text("{}"),
        ENSEMBLE_FILE,
        "member 'm1' is itself an ensemble",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_ensembles_are_refused_naming_the_file(members: dict[str, Path], tmp_path: Path, case: str) -> None:
    breaks, file, reason = BROKEN[case]
    folder = _ensemble(tmp_path / "broken", [members["a"], members["noisy"]])
    breaks(folder)
    with pytest.raises(BundleError) as info:
        Detector.load(folder)
    message = str(info.value)
    assert str(folder / file) in message, message
    assert re.search(reason, message), message


def test_save_refuses_a_source_per_member_mismatch(members: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"one source folder per member: 2 member\(s\), 1 source"):
        save_ensemble(tmp_path / "e", EnsembleConfig(members=["a", "b"]), [members["a"]])


# --------------------------------------------------------------------------- command line


def test_cli_ensemble_then_predict_and_evaluate(
    members: dict[str, Path],
    val_data: Path,
    images: list[Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "ens"
    argv = ["ensemble", members["a"], members["other_prep"], "--val", val_data, "--combine", "logistic"]
    assert main([str(a) for a in [*argv, "--out", out, "--faces", "off", "--workers", "2"]]) == 0
    stdout, stderr = capsys.readouterr()
    assert stdout.strip() == str(out.resolve())
    assert "Member 1/2" in stderr and "Member 2/2" in stderr
    assert "Saved" in stderr and "validation ROC AUC" in stderr and "threshold" in stderr

    assert main(["predict", *map(str, images[:3]), "--model", str(out), "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = Detector.load(out, device="cpu")
    for row, path in zip(rows, images):
        single = expected.predict(path)
        assert row["p_fake"] == pytest.approx(single.p_fake, abs=TOL) and row["label"] == single.label
        assert row["model"] == "ens" and row["threshold"] == expected.threshold

    report = tmp_path / "report"
    assert main(["evaluate", str(val_data), "--model", str(out), "--out", str(report), "--quiet"]) == 0
    capsys.readouterr()
    model = json.loads((report / "metrics.json").read_text())["model"]
    assert model["arch"] == "ensemble" and model["combine"] == "logistic" and len(model["members"]) == 2


def test_cli_ensemble_errors(
    members: dict[str, Path], val_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["ensemble", str(members["a"]), "--val", str(val_data), "--out", str(tmp_path / "e")]
    assert main([*base, "--combine", "median"]) == 1
    assert "invalid choice: 'median'" in capsys.readouterr().err
    assert main([*base[:1], str(tmp_path / "nowhere"), *base[2:]]) == 1
    assert f"error: {tmp_path / 'nowhere'}: model bundle folder not found." in capsys.readouterr().err
