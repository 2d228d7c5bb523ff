"""Rebuild and calibrate refuse bad input before doing any work: a recipe mistake is named
before any cropping, and a validation set that cannot calibrate leaves the bundle untouched."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake_detector.cli import main
from deepfake_detector.data.synthetic import synthetic_image
from deepfake_detector.errors import DatasetError, DeepfakeDetectorError
from deepfake_detector.rebuild import CalibrateStep, calibrate, read_recipe, rebuild

# A recipe as {table: {key: TOML value}}; a str in place of a table is written as a top-level key.
BASE: dict[str, dict[str, str] | str] = {
    "data": {"sets": '["gen_faces"]', "crop_margin": "0.1", "face_detector": '"haar"'},
    "calibrate": {"max_fpr": "0.1", "uncertain_share": "0.1"},
    "bundle": {"name": '"mini"'},
    "train": {"arch": '"seed-cnn"', "epochs": "1"},
}


def _recipe_text(recipe: dict[str, dict[str, str] | str]) -> str:
    keys = [f"{name} = {value}" for name, value in recipe.items() if isinstance(value, str)]
    tables = [
        "\n".join([f"[{name}]", *(f"{key} = {v}" for key, v in table.items())])
        for name, table in recipe.items()
        if isinstance(table, dict)
    ]
    return "\n".join(keys + tables) + "\n"


def _write_recipe(tmp_path: Path, change: dict[str, dict[str, str | None] | str | None]) -> Path:
    """BASE with ``change`` applied (a None value drops that key or table), rooted in tmp_path."""
    recipe: dict[str, dict[str, str] | str] = {name: dict(table) for name, table in BASE.items()}
    recipe["data"].update(root=f'"{tmp_path / "data"}"', work=f'"{tmp_path / "work"}"')
    for name, value in change.items():
        if value is None or isinstance(value, str):
            recipe.pop(name, None)
            if value is not None:
                recipe[name] = value
            continue
        table = recipe.setdefault(name, {})
        for key, v in value.items():
            table.pop(key, None)
            if v is not None:
                table[key] = v
    path = tmp_path / "recipe.toml"
    path.write_text(_recipe_text(recipe))
    return path


def _write_image(path: Path, seed: int, fake: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(synthetic_image(np.random.default_rng(seed), 64, fake=fake)).save(path)


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """One tiny set, so that only the recipe can be at fault."""
    for i in range(3):
        _write_image(tmp_path / "data" / "gen_faces" / "real" / f"{i}.png", i)
        _write_image(tmp_path / "data" / "gen_faces" / "fake" / f"{i}.png", 10 + i, fake=True)
    return tmp_path / "data"


def test_base_recipe_reads(tmp_path: Path) -> None:
    recipe = read_recipe(_write_recipe(tmp_path, {}))
    assert recipe.data.sets == ["gen_faces"] and recipe.calibrate.max_fpr == 0.1 and recipe.train["epochs"] == 1


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"data": "5"}, "[data]"),
        ({"data": {"root": "5"}}, "root"),
        ({"data": {"work": "[]"}}, "work"),
        ({"data": {"sets": "[]"}}, "sets"),
        ({"data": {"sets": '"gen_faces"'}}, "sets"),
        ({"data": {"sets": '["gen_faces", 5]'}}, "sets"),
        ({"data": {"sets": '["gen_faces", "gen_faces"]'}}, "sets"),
        ({"data": {"sets": '["../gen_faces"]'}}, "sets"),
        ({"data": {"crop_margin": "-5"}}, "crop_margin"),
        ({"data": {"crop_margin": "nan"}}, "crop_margin"),
        ({"data": {"face_detector": '"dlib"'}}, "face_detector"),
        ({"data": {"seed": '"x"'}}, "seed"),
        ({"data": {"seed": "-1"}}, "seed"),
        ({"data": {"bogus": "1"}}, "bogus"),
        ({"train": None}, "[train]"),
        ({"train": {"arch": '"seed_cnn"'}}, "arch"),
        ({"train": {"epochz": "1"}}, "epochz"),
        ({"train": {"epochs": '"1"'}}, "epochs"),
        ({"train": {"lr": "-1.0"}}, "lr"),
        ({"train": {"out": '"elsewhere"'}}, "out"),
        ({"train": {"crop_margin": "0.3"}}, "crop_margin"),
        ({"calibrate": {"max_fpr": "7"}}, "max_fpr"),
        ({"calibrate": {"max_fpr": '"low"'}}, "max_fpr"),
        ({"calibrate": {"max_fpr": "true"}}, "max_fpr"),
        ({"calibrate": {"uncertain_share": "-1"}}, "uncertain_share"),
        ({"calibrate": {"uncertain_share": "1.0"}}, "uncertain_share"),
        ({"calibrate": {"reencode": "{jpeg_qualities = [500]}"}}, "reencode"),
        ({"calibrate": {"reencode": '"yes"'}}, "reencode"),
        ({"calibrate": {"max_fp": "0.1"}}, "max_fp"),
        ({"calibrat": {"max_fpr": "0.1"}}, "calibrat"),
        ({"name": '"x"'}, "name"),
        ({"bundle": {"name": "3"}}, "name"),
        ({"bundle": {"terms": "[]"}}, "terms"),
    ],
)
def test_bad_recipe_is_refused_before_any_crop(tmp_path: Path, data_root: Path, change: dict, named: str) -> None:
    recipe = _write_recipe(tmp_path, change)
    with pytest.raises(DeepfakeDetectorError) as caught:
        rebuild(recipe)
    prefix = f"{recipe}: "
    assert str(caught.value).startswith(prefix) and named in str(caught.value)[len(prefix) :]
    assert not (tmp_path / "work").exists()


def test_missing_set_and_file_as_work_are_refused_before_any_crop(tmp_path: Path, data_root: Path) -> None:
    recipe = _write_recipe(tmp_path, {"data": {"sets": '["gen_faces", "nope"]'}})
    with pytest.raises(DatasetError, match=r"\['nope'\].*recipe\.toml"):
        rebuild(recipe)
    assert not (tmp_path / "work").exists()
    (tmp_path / "afile").write_text("")
    with pytest.raises(DeepfakeDetectorError, match="afile: is a file"):
        rebuild(_write_recipe(tmp_path, {}), work=str(tmp_path / "afile"))


def _one_class(folder: Path, synthetic_test: Path) -> Path:
    for path in sorted((synthetic_test / "real").rglob("*.png"))[:4]:
        (folder / "real").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / "real" / path.name)
    return folder


def _single(folder: Path, synthetic_test: Path) -> Path:
    path = next((synthetic_test / "fake").rglob("*.png"))
    (folder / "fake").mkdir(parents=True)
    shutil.copy(path, folder / "fake" / path.name)
    return folder


def _unreadable(folder: Path, synthetic_test: Path) -> Path:
    for label in ("real", "fake"):
        (folder / label).mkdir(parents=True)
        for i in range(2):
            (folder / label / f"{i}.png").write_text("not an image")
    return folder


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_one_class, r"both real and fake.*4 could be scored: 4 real, 0 fake"),
        (_single, r"both real and fake.*1 could be scored: 0 real, 1 fake"),
        (_unreadable, r"none of its 4 validation images could be scored"),
    ],
)
def test_calibrate_refuses_a_validation_set_it_cannot_use(
    tmp_path: Path, trained_bundle: Path, synthetic_test: Path, capsys, make, message: str
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(trained_bundle, bundle)
    before = (bundle / "config.json").read_bytes()
    val = make(tmp_path / "val", synthetic_test)
    with pytest.raises(DatasetError, match=message) as caught:
        calibrate(bundle, val, CalibrateStep())
    assert str(val) in str(caught.value)
    assert (bundle / "config.json").read_bytes() == before
    if make is _unreadable:
        assert capsys.readouterr().err.count("warning: not scored:") == 4


def test_calibrate_command_leaves_the_bundle_on_bad_input(
    tmp_path: Path, trained_bundle: Path, synthetic_test: Path, capsys
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(trained_bundle, bundle)
    before = (bundle / "config.json").read_bytes()
    val = _one_class(tmp_path / "val", synthetic_test)
    assert main(["calibrate", str(bundle), "--val", str(val)]) == 1
    assert f"{val}: calibration needs both real and fake" in capsys.readouterr().err
    with pytest.raises(DeepfakeDetectorError, match="max_fpr"):
        calibrate(bundle, synthetic_test, CalibrateStep(max_fpr="low"))  # type: ignore[arg-type]
    assert (bundle / "config.json").read_bytes() == before
