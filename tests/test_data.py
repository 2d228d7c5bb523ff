"""Data sets: folder scanning, CSV manifests, stratified splits and augmentations."""

from __future__ import annotations

from collections import Counter
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake_detector.data import (
    NO_AUGMENT,
    AugmentConfig,
    Sample,
    augment,
    load_dataset,
    parse_augment,
    read_manifest,
    scan_folder,
    stratified_split,
)
from deepfake_detector.data.synthetic import synthetic_image
from deepfake_detector.errors import DatasetError, InvalidArgumentError


def _png(path: Path, seed: int = 0, size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(synthetic_image(np.random.default_rng(seed), size, fake=False)).save(path)
    return path


def _by_name(samples: list[Sample]) -> dict[str, Sample]:
    return {s.path.name: s for s in samples}


# --------------------------------------------------------------------------- scan_folder


def test_scan_folder_mixed_case_nested_groups_and_non_images(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _png(root / "Real" / "r_direct.png", 1)
    _png(root / "Real" / "Faces" / "r_nested.png", 2)
    _png(root / "FAKE" / "Deepfakes" / "sub" / "x.png", 3)
    _png(root / "FAKE" / "f_direct.png", 4)
    (root / "Real" / "notes.txt").write_text("not an image")
    (root / "FAKE" / "Deepfakes" / "labels.json").write_text("{}")
    (root / "other").mkdir()
    _png(root / "other" / "outside.png", 5)  # not below a class folder: ignored

    samples = scan_folder(root)
    by_name = _by_name(samples)
    assert set(by_name) == {"r_direct.png", "r_nested.png", "x.png", "f_direct.png"}
    assert (by_name["r_direct.png"].target, by_name["r_direct.png"].group) == (0, "real")
    assert (by_name["r_nested.png"].target, by_name["r_nested.png"].group) == (0, "Faces")
    assert (by_name["x.png"].target, by_name["x.png"].group) == (1, "Deepfakes")
    assert (by_name["f_direct.png"].target, by_name["f_direct.png"].group) == (1, "fake")
    assert by_name["x.png"].label == "fake" and by_name["r_direct.png"].label == "real"
    assert by_name["x.png"].path == root / "FAKE" / "Deepfakes" / "sub" / "x.png"
    # load_dataset dispatches a folder to scan_folder
    assert load_dataset(root) == samples


def test_scan_folder_of_several_data_sets_prefixes_groups(tmp_path: Path) -> None:
    parent = tmp_path / "all"
    _png(parent / "setA" / "real" / "a1.png", 1)
    _png(parent / "setA" / "fake" / "F2F" / "a2.png", 2)
    _png(parent / "setB" / "Real" / "b1.png", 3)
    _png(parent / "setB" / "FAKE" / "b2.png", 4)
    _png(parent / "more" / "setC" / "fake" / "NT" / "c1.png", 5)
    (parent / "empty_dir").mkdir()

    by_name = _by_name(scan_folder(parent))
    assert {name: (s.target, s.group) for name, s in by_name.items()} == {
        "a1.png": (0, "setA/real"),
        "a2.png": (1, "setA/F2F"),
        "b1.png": (0, "setB/real"),
        "b2.png": (1, "setB/fake"),
        "c1.png": (1, "more/setC/NT"),
    }


def test_scan_folder_without_class_folders_explains_layout(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    _png(root / "img.png")
    _png(root / "faces" / "img2.png")
    with pytest.raises(DatasetError) as info:
        scan_folder(root)
    message = str(info.value)
    assert str(root) in message
    assert "'real'" in message and "'fake'" in message
    assert "manifest" in message


def test_scan_folder_missing_or_imageless(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        scan_folder(tmp_path / "nope")
    (tmp_path / "d" / "real").mkdir(parents=True)
    (tmp_path / "d" / "fake").mkdir()
    (tmp_path / "d" / "fake" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match="no images"):
        scan_folder(tmp_path / "d")


# --------------------------------------------------------------------------- read_manifest


def test_read_manifest_relative_paths_labels_and_groups(tmp_path: Path) -> None:
    a = _png(tmp_path / "imgs" / "a.png", 1)
    b = _png(tmp_path / "imgs" / "b.png", 2)
    c = _png(tmp_path / "imgs" / "c.png", 3)
    d = _png(tmp_path / "elsewhere" / "d.png", 4)
    manifest = tmp_path / "lists" / "m.csv"
    manifest.parent.mkdir()
    manifest.write_text(
        f"path,label,group\n../imgs/a.png,0,\n../imgs/b.png,fake,FaceSwap\n../imgs/c.png, REAL ,studio\n{d},1,\n"
    )
    samples = read_manifest(manifest)
    assert [(s.path.resolve(), s.target, s.group) for s in samples] == [
        (a.resolve(), 0, "real"),
        (b.resolve(), 1, "FaceSwap"),
        (c.resolve(), 0, "studio"),
        (d.resolve(), 1, "fake"),
    ]
    assert samples[0].path == manifest.parent / "../imgs/a.png"  # relative to the CSV, not the cwd
    assert load_dataset(manifest) == samples


def test_read_manifest_group_column_is_optional(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png", 1)
    manifest = tmp_path / "m.csv"
    manifest.write_text("label,path\nreal,a.png\nFake,b.png\n")
    assert [(s.path.name, s.target, s.group) for s in read_manifest(manifest)] == [
        ("a.png", 0, "real"),
        ("b.png", 1, "fake"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("path,label\na.png,real\na.png,maybe\n", ["line 3", "maybe"]),
        ("path,label\na.png,real\n  ,fake\n", ["line 3", "empty path"]),
        ("file,label\na.png,real\n", ["'path'"]),
        ("path,class\na.png,real\n", ["'label'"]),
    ],
    ids=["bad-label", "empty-path", "no-path-column", "no-label-column"],
)
def test_read_manifest_refuses_bad_rows_and_headers(tmp_path: Path, text: str, expected: list[str]) -> None:
    _png(tmp_path / "a.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    with pytest.raises(DatasetError) as info:
        read_manifest(manifest)
    assert str(manifest) in str(info.value)
    for part in expected:
        assert part in str(info.value)


def test_read_manifest_missing_files_named(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.png,real\nghost.png,fake\n")
    with pytest.raises(DatasetError) as info:
        read_manifest(manifest)
    assert "ghost.png" in str(info.value)
    assert "1 listed file" in str(info.value)
    with pytest.raises(DatasetError, match="manifest not found"):
        read_manifest(tmp_path / "absent.csv")


def test_read_manifest_collapses_repeated_rows_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file listed twice (however its path is written) is used once, so copies cannot land in
    both parts of a split."""
    a = _png(tmp_path / "a.png", 1)
    _png(tmp_path / "b.png", 2)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label,group\na.png,real,first\nb.png,fake,\n./a.png,real,second\n{a},0,\n")
    samples = read_manifest(manifest)
    assert [(s.path.name, s.target, s.group) for s in samples] == [("a.png", 0, "first"), ("b.png", 1, "fake")]
    warning = capsys.readouterr().err
    assert str(manifest) in warning and "2 row(s) repeat" in warning
    train, val = stratified_split(read_manifest(manifest), 0.5, seed=0)
    assert not {s.path.resolve() for s in train} & {s.path.resolve() for s in val}


def test_read_manifest_refuses_a_file_labelled_both_ways(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\na.png,real\n./a.png,fake\n")
    with pytest.raises(DatasetError, match="both as real and as fake") as info:
        read_manifest(manifest)
    assert str(manifest) in str(info.value) and "a.png" in str(info.value)


# --------------------------------------------------------------------------- stratified_split


def _strata_samples() -> list[Sample]:
    sizes = {(0, "scenes"): 50, (0, "studio"): 30, (1, "Deepfakes"): 40, (1, "FaceSwap"): 10, (1, "tiny"): 2}
    return [
        Sample(Path(f"{group}_{target}_{i}.png"), target, group)
        for (target, group), n in sizes.items()
        for i in range(n)
    ]


def test_stratified_split_reproducible_and_seed_dependent() -> None:
    samples = _strata_samples()
    a_train, a_val = stratified_split(samples, 0.2, seed=7)
    b_train, b_val = stratified_split(samples, 0.2, seed=7)
    c_train, c_val = stratified_split(samples, 0.2, seed=8)
    assert a_train == b_train and a_val == b_val
    assert set(a_val) != set(c_val)


def test_stratified_split_keeps_strata_and_loses_nothing() -> None:
    samples = _strata_samples()
    train, val = stratified_split(samples, 0.2, seed=1)
    assert not set(train) & set(val)
    assert sorted(train + val, key=str) == sorted(samples, key=str)
    total = Counter((s.target, s.group) for s in samples)
    in_val = Counter((s.target, s.group) for s in val)
    in_train = Counter((s.target, s.group) for s in train)
    assert len(val) == round(len(samples) * 0.2)
    for key, n in total.items():
        assert in_val[key] in (int(n * 0.2), int(n * 0.2) + 1), key
        assert in_train[key] >= 1, key
    assert in_val[(0, "scenes")] == 10 and in_val[(1, "FaceSwap")] == 2


def test_stratified_split_many_small_groups_keeps_the_fraction() -> None:
    # One folder per video with 3 frames each: a per-group minimum would put a third in validation.
    samples = [Sample(Path(f"v{g}_{i}.png"), g % 2, f"video{g}") for g in range(40) for i in range(3)]
    train, val = stratified_split(samples, 0.2, seed=3)
    assert len(val) == 24 and len(train) == 96
    assert {s.target for s in val} == {0, 1}


def test_stratified_split_gives_each_class_one_validation_sample() -> None:
    samples = [Sample(Path(f"r{i}.png"), 0, "real") for i in range(20)] + [
        Sample(Path(f"f{i}.png"), 1, "fake") for i in range(2)
    ]
    _, val = stratified_split(samples, 0.1, seed=0)
    assert sum(s.target for s in val) >= 1


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_stratified_split_refuses_bad_fraction(fraction: float) -> None:
    with pytest.raises(InvalidArgumentError, match="val_fraction"):
        stratified_split(_strata_samples(), fraction)


def test_worker_errors_reach_the_user_as_their_own_line(tmp_path: Path) -> None:
    """torch re-raises a worker's DatasetError with the worker's traceback as its message;
    plain_errors gives back the original one line."""
    from torch.utils.data import DataLoader

    from deepfake_detector.data.torch_dataset import ImageDataset, plain_errors
    from deepfake_detector.preprocess import Preprocessing

    broken = tmp_path / "real" / "a.png"
    broken.parent.mkdir()
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 60)
    loader = DataLoader(ImageDataset([Sample(broken, 0, "real")], Preprocessing(32)), num_workers=1)
    with pytest.raises(DatasetError) as raw:
        list(loader)
    assert "Traceback" in str(raw.value)
    with pytest.raises(DatasetError) as plain:
        list(plain_errors(loader))
    assert str(plain.value) == f"{broken}: no image of this data set can be decoded."


# --------------------------------------------------------------------------- augmentations


def test_parse_augment_presets_and_overrides() -> None:
    assert parse_augment("default") == AugmentConfig()
    assert parse_augment("  Default ") == AugmentConfig()
    none = parse_augment("none")
    assert none == NO_AUGMENT and not none.enabled
    assert AugmentConfig().enabled
    cfg = parse_augment("jpeg=0.8,blur=0")
    assert cfg.jpeg_p == 0.8 and cfg.blur_p == 0.0
    default = AugmentConfig()
    unchanged = {f.name for f in fields(AugmentConfig)} - {"jpeg_p", "blur_p"}
    assert all(getattr(cfg, n) == getattr(default, n) for n in unchanged)
    cfg = parse_augment("flip=1, crop=0,color=0.25,rescale=1,JPEG=0")
    assert (cfg.flip, cfg.crop_p, cfg.color_p, cfg.rescale_p, cfg.jpeg_p) == (1.0, 0.0, 0.25, 1.0, 0.0)


@pytest.mark.parametrize(
    "spec, words",
    [
        ("sharpen=0.5", ["sharpen", "jpeg"]),
        ("jpeg", ["jpeg"]),
        ("jpeg=1.5", ["jpeg", "[0, 1]"]),
        ("blur=-0.1", ["blur", "[0, 1]"]),
        ("flip=often", ["flip", "often"]),
        ("jpeg=nan", ["jpeg"]),
        ("jpeg=0.5,", ["key=probability"]),
    ],
)
def test_parse_augment_rejects_bad_specs(spec: str, words: list[str]) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        parse_augment(spec)
    for word in words:
        assert word in str(info.value)


def _test_image() -> np.ndarray:
    return synthetic_image(np.random.default_rng(3), 64, fake=True)


ALL_ON = AugmentConfig(flip=1.0, crop_p=1.0, color_p=1.0, blur_p=1.0, rescale_p=1.0, jpeg_p=1.0)


def test_augment_all_steps_changes_image_deterministically() -> None:
    image = _test_image()
    before = image.copy()
    a = augment(image, ALL_ON, np.random.default_rng(11))
    b = augment(image, ALL_ON, np.random.default_rng(11))
    c = augment(image, ALL_ON, np.random.default_rng(12))
    np.testing.assert_array_equal(image, before)  # input untouched
    for out in (a, b, c):
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
        assert 0.85 * 64 - 1 <= out.shape[0] <= 64 and 0.85 * 64 - 1 <= out.shape[1] <= 64
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)
    assert a.shape != image.shape or np.abs(a.astype(int) - image.astype(int)).mean() > 1.0


def test_augment_single_steps() -> None:
    image = _test_image()
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(augment(image, NO_AUGMENT, rng), image)
    flip_only = AugmentConfig(**{**NO_AUGMENT.to_dict(), "flip": 1.0})
    np.testing.assert_array_equal(augment(image, flip_only, rng), image[:, ::-1])
    jpeg_only = AugmentConfig(**{**NO_AUGMENT.to_dict(), "jpeg_p": 1.0, "jpeg_quality": (40, 40)})
    out = augment(image, jpeg_only, rng)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)
    assert np.abs(out.astype(int) - image.astype(int)).mean() < 20  # recompressed, not replaced
