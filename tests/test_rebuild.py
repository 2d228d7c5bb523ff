"""The shipped detector's rebuild: source-held-out splits, calibration, install, the whole path."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import deepfake_detector.faces as faces_module
import deepfake_detector.shipped as shipped
from deepfake_detector.bundle import load_bundle, read_config, save_bundle
from deepfake_detector.cli import main
from deepfake_detector.data.dataset import Sample, load_dataset
from deepfake_detector.data.held_out import PARTS, crops_of, split_sources, write_manifest
from deepfake_detector.data.synthetic import synthetic_image
from deepfake_detector.detector import Detector
from deepfake_detector.errors import BundleError, DatasetError, InvalidArgumentError
from deepfake_detector.faces.base import FaceBox
from deepfake_detector.rebuild import CalibrateStep, calibrate, install, read_recipe, rebuild
from deepfake_detector.threshold import choose_band, choose_threshold
from deepfake_detector.training import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, seed: int, fake: bool = False, size: int = 96) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(synthetic_image(np.random.default_rng(seed), size, fake=fake)).save(path)


def make_research_sets(root: Path, n: int = 10) -> Path:
    """A miniature of the research sets' layouts: ffpp with train__/test__ names and clusters,
    a generated-faces set, and real-only face_photos."""
    ffpp = root / "ffpp_faces"
    rows = ["path,label,group,approx_target_cluster"]
    for i in range(n):
        for split in ("train", "test"):
            real = f"real/original/{split}__roi_{i}.jpg"
            fake = f"fake/Face2Face/{split}__roi_{i}.jpg"
            _write(ffpp / real, i)
            _write(ffpp / fake, 100 + i, fake=True)
            cluster = f"{split}_c{i // 2}"  # two videos' frames share a cluster
            rows += [f"{real},real,original,{cluster}", f"{fake},fake,Face2Face,{cluster}"]
    (ffpp / "manifest.csv").write_text("\n".join(rows) + "\n")
    for i in range(n):
        _write(root / "gen_faces" / "real" / "ffhq" / f"{i}.png", 200 + i)
        _write(root / "gen_faces" / "fake" / "gan" / f"{i}.png", 300 + i, fake=True)
    for folder in ("single", "group", "none"):
        for i in range(4):
            _write(root / "face_photos" / folder / f"{folder}{i}.jpg", 400 + i)
    return root


SETS = ["ffpp_faces", "gen_faces", "face_photos"]


def test_split_holds_sources_out(tmp_path: Path) -> None:
    root = make_research_sets(tmp_path / "data")
    split = split_sources(root, SETS, seed=0)
    paths = {part: {s.path for s in split.parts[part]} for part in PARTS}
    assert not paths["train"] & paths["val"] and not paths["train"] & paths["test"] and not paths["val"] & paths["test"]
    total = sum(1 for p in root.rglob("*.*") if p.suffix in (".jpg", ".png"))
    assert sum(split.counts().values()) == total
    ffpp_test = {s.path.name for s in split.parts["test"] if s.group.startswith("ffpp_faces/")}
    assert ffpp_test and all(name.startswith("test__") for name in ffpp_test)
    # a cluster (here roi 2k and 2k+1, real and fake) never straddles train and validation
    clusters = {}
    for part in ("train", "val"):
        for s in split.parts[part]:
            if s.group.startswith("ffpp_faces/"):
                roi = int(s.path.stem.split("_")[-1])
                clusters.setdefault(roi // 2, set()).add(part)
    assert clusters and all(len(parts) == 1 for parts in clusters.values())
    assert {s.group for s in split.parts["test"] if s.group.startswith("face_photos/")} == {
        "face_photos/single",
        "face_photos/group",
        "face_photos/none",
    }
    assert all(s.target == 0 for part in PARTS for s in split.parts[part] if s.group.startswith("face_photos/"))
    gen_test = [s for s in split.parts["test"] if s.group.startswith("gen_faces/")]
    assert {s.target for s in gen_test} == {0, 1}


def test_split_is_reproducible_and_seeded(tmp_path: Path) -> None:
    root = make_research_sets(tmp_path / "data")
    a, b = split_sources(root, SETS, seed=1), split_sources(root, SETS, seed=1)
    assert all([s.path for s in a.parts[p]] == [s.path for s in b.parts[p]] for p in PARTS)


def test_split_names_a_missing_set(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no_such_set"):
        split_sources(tmp_path, ["no_such_set"])


def test_crops_follow_their_source(tmp_path: Path) -> None:
    data, crops = tmp_path / "data", tmp_path / "crops"
    source = data / "gen_faces" / "fake" / "gan" / "a[1].png"
    _write(source, 0)
    folder = crops / "gen_faces" / "fake" / "gan"
    for name in ("a[1].png_face0.png", "a[1].png_face1.png", "a[1].png_frame3_face0.png", "a[1].png2_face0.png"):
        _write(folder / name, 1)
    _write(folder / "b.png_face0.png", 2)
    found = crops_of(Sample(source, 1, "gen_faces/gan"), data, crops)
    assert sorted(p.path.name for p in found) == [
        "a[1].png_face0.png",
        "a[1].png_face1.png",
        "a[1].png_frame3_face0.png",
    ]
    assert all(s.target == 1 and s.group == "gen_faces/gan" for s in found)
    photo = data / "face_photos" / "group" / "g.jpg"
    _write(photo, 3)
    _write(crops / "face_photos" / "real" / "group" / "g.jpg_face0.png", 4)
    assert len(crops_of(Sample(photo, 0, "face_photos/group"), data, crops)) == 1


def test_manifest_round_trip(tmp_path: Path) -> None:
    _write(tmp_path / "x.png", 0)
    samples = [Sample(tmp_path / "x.png", 1, "gen/gan")]
    loaded = load_dataset(write_manifest(samples, tmp_path / "m" / "train.csv"))
    assert [(s.path.name, s.target, s.group) for s in loaded] == [("x.png", 1, "gen/gan")]


@pytest.mark.parametrize("max_fpr", [0.0, 0.05, 0.2])
def test_threshold_bounds_the_false_alarms(max_fpr: float) -> None:
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(200, int), np.ones(200, int)]
    p = np.clip(np.r_[rng.normal(0.35, 0.15, 200), rng.normal(0.65, 0.15, 200)], 0, 1)
    t = choose_threshold(y, p, max_fpr=max_fpr)
    assert np.mean(p[y == 0] >= t) <= max_fpr + 1e-9
    assert np.mean(p[y == 1] >= t) > 0  # still calls some fakes fake
    assert t >= choose_threshold(y, p) - 1e-12  # bounding false alarms only raises the threshold here


def test_threshold_refuses_a_bad_bound() -> None:
    with pytest.raises(InvalidArgumentError, match="max_fpr"):
        choose_threshold(np.array([0, 1]), np.array([0.2, 0.8]), max_fpr=1.5)


def test_band_holds_the_asked_share() -> None:
    p = np.linspace(0, 1, 1001)
    band = choose_band(p, 0.5, 0.1)
    assert np.mean(np.abs(p - 0.5) < band) == pytest.approx(0.1, abs=0.01)
    assert choose_band(p, 0.5, 0.0) == 0.0
    assert choose_band(np.array([0.0, 1.0]), 0.5, 0.99) < 0.5
    with pytest.raises(InvalidArgumentError, match="share"):
        choose_band(p, 0.5, 1.0)


def test_repository_recipe_reads() -> None:
    recipe = read_recipe(REPO / "recipes" / "default.toml")
    assert recipe.data.sets and recipe.calibrate.max_fpr is not None and recipe.bundle.trained_on
    cfg = TrainConfig.create(**recipe.train, data="train.csv", out="out").resolved()
    assert cfg.arch == recipe.train["arch"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[train]\nepochs = 1\n[data]\nroots = 'x'\n", "unknown key"),
        ("[data]\nroot = 'x'\n", r"\[train\] table"),
        ("[train\n", "unreadable recipe"),
    ],
)
def test_bad_recipes(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "r.toml"
    path.write_text(text)
    with pytest.raises(InvalidArgumentError, match=message):
        read_recipe(path)


def test_calibrate_writes_the_rule(tmp_path: Path, trained_bundle: Path, synthetic_test: Path) -> None:
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(trained_bundle, bundle)
    from deepfake_detector.rebuild import BundleStep

    result = calibrate(
        bundle,
        synthetic_test,
        CalibrateStep(max_fpr=0.1, uncertain_share=0.2, reencode={"jpeg_qualities": [80], "scales": []}),
        BundleStep(name="tiny", trained_on="generated pictures", terms="none"),
    )
    config = read_config(bundle)
    assert config.threshold == pytest.approx(result["threshold"])
    assert config.uncertain["band"] == pytest.approx(result["band"]) and result["band"] > 0
    assert config.reencode is not None and config.reencode.jpeg_qualities == (80,)
    assert config.name == "tiny" and config.training["trained_on"] == "generated pictures"
    assert config.metrics["validation"]["n"] == len(load_dataset(synthetic_test))


def test_install_and_default_model(tmp_path: Path, trained_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path / "weights")
    with pytest.raises(BundleError, match="shipped detector is missing"):
        shipped.default_model_dir()
    (tmp_path / "weights").mkdir()
    target = install(trained_bundle)
    assert target == shipped.default_model_dir()
    assert read_config(target).arch == read_config(trained_bundle).arch
    install(trained_bundle)  # a second install replaces the first
    assert not list((tmp_path / "weights").glob(".*"))


def test_predict_without_model_uses_the_shipped_one(
    tmp_path: Path, trained_bundle: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path / "weights")
    image = tmp_path / "x.png"
    _write(image, 0)
    assert main(["predict", str(image), "--quiet"]) == 1
    assert "shipped detector is missing" in capsys.readouterr().err
    (tmp_path / "weights").mkdir()
    install(trained_bundle)
    assert main(["predict", str(image), "--quiet", "--format", "jsonl", "--faces", "off"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["model"] == read_config(trained_bundle).name


class CentreFace:
    """Finds one face: the middle half of any picture."""

    name = "centre"

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        h, w = image.shape[:2]
        return [FaceBox(w / 4, h / 4, w / 2, h / 2, 0.99)]


def test_rebuild_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faces_module, "create_face_detector", lambda name: CentreFace())
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path / "weights")
    (tmp_path / "weights").mkdir()
    data = make_research_sets(tmp_path / "data", n=12)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        f"""
[bundle]
name = "mini"
[data]
root = "{data}"
sets = {json.dumps(SETS)}
work = "{tmp_path / "work"}"
crop_margin = 0.1
[calibrate]
max_fpr = 0.2
uncertain_share = 0.1
[train]
arch = "seed-cnn"
epochs = 1
batch_size = 16
"""
    )
    bundle = rebuild(recipe, do_install=True)
    config = read_config(bundle)
    assert config.name == "mini" and config.preprocessing.crop is not None
    assert config.preprocessing.crop.margin == pytest.approx(0.1)
    parts = {p: load_dataset(tmp_path / "work" / f"{p}.csv") for p in PARTS}
    assert all(parts[p] for p in PARTS)
    assert not {s.path for s in parts["train"]} & {s.path for s in parts["test"]}
    assert read_config(shipped.default_model_dir()).name == "mini"
    if importlib.util.find_spec("onnx") is not None:  # the export ships with the weights, and is what CPUs run
        assert (shipped.default_model_dir() / "onnx" / "model.onnx").is_file()
        assert Detector.load().runtime == "onnx"
    # a second run keeps the crops made with the same crop
    crop_file = next((tmp_path / "work" / "crops" / "gen_faces").rglob("*_face0.png"))
    before = crop_file.stat().st_mtime_ns
    rebuild(recipe)
    assert crop_file.stat().st_mtime_ns == before


def test_bundle_weights_are_readable_by_others(tmp_path: Path, trained_bundle: Path) -> None:
    config, model = load_bundle(trained_bundle)
    target = save_bundle(tmp_path / "b", config, model)
    assert (target / "model.safetensors").stat().st_mode & 0o044 == 0o044


def test_calibrate_command(tmp_path: Path, trained_bundle: Path, synthetic_test: Path, capsys) -> None:
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(trained_bundle, bundle)
    name_before = read_config(bundle).name
    assert main(["calibrate", str(bundle), "--val", str(synthetic_test), "--max-fpr", "0.1"]) == 0
    assert "threshold" in capsys.readouterr().out
    config = read_config(bundle)
    assert config.name == name_before and config.reencode is not None and config.uncertain["band"] > 0
    assert config.training["calibration"]["uncertain_share"] == 0.1
    assert main(["calibrate", str(bundle), "--val", str(synthetic_test), "--no-reencode-check"]) == 0
    assert read_config(bundle).reencode is None
    assert main(["calibrate", str(bundle), "--val", str(synthetic_test), "--uncertain-share", "1.5"]) == 1
    assert "share" in capsys.readouterr().err


def test_rebuild_names_a_missing_data_folder(tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('[train]\narch = "seed-cnn"\n')
    assert main(["rebuild", "--recipe", str(recipe), "--data", str(tmp_path / "nowhere")]) == 1
    assert "nowhere: no such data folder" in capsys.readouterr().err
