"""Training: it learns, it writes a complete bundle, and resume matches an uninterrupted run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from deepfake_detector import Detector
from deepfake_detector.bundle import CONFIG_FILE, WEIGHTS_FILE
from deepfake_detector.data.self_blend import SelfBlendConfig
from deepfake_detector.errors import CheckpointError, DatasetError, InvalidArgumentError, UnknownModelError
from deepfake_detector.training import TrainConfig, train


def test_training_beats_chance_on_unseen_images(trained_bundle: Path, synthetic_test: Path) -> None:
    det = Detector.load(trained_bundle)
    real = sorted((synthetic_test / "real").rglob("*.png"))
    fake = sorted((synthetic_test / "fake").rglob("*.png"))
    preds = list(det.predict_many(real + fake, batch_size=16, workers=1))
    p = np.array([pr.p_fake for pr in preds])
    y = np.array([0] * len(real) + [1] * len(fake))
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, p) > 0.85
    labels = np.array([pr.label == "fake" for pr in preds])
    assert (labels == y.astype(bool)).mean() > 0.75


def test_bundle_contents(trained_bundle: Path) -> None:
    assert (trained_bundle / WEIGHTS_FILE).is_file()
    assert (trained_bundle / "training_curves.png").stat().st_size > 0
    assert not (trained_bundle / ".checkpoint").exists()
    config = json.loads((trained_bundle / CONFIG_FILE).read_text())
    assert config["arch"] == "seed-cnn"
    assert config["output"] == "logit_fake"
    assert config["labels"] == ["real", "fake"]
    assert 0.0 <= config["threshold"] <= 1.0
    assert config["preprocessing"]["input_size"] == 128
    assert config["training"]["augment"]["jpeg_p"] == 0.0, "seed-cnn's prototype recipe has no augmentation"
    assert config["training"]["config"]["optimizer"] == "adam"
    assert len(config["training"]["history"]) == config["training"]["epochs_run"]
    assert config["metrics"]["validation"]["roc_auc_score"] is not None


class _Interrupt(Exception):
    pass


def test_resume_gives_same_weights_as_uninterrupted(tmp_path: Path, synthetic_train: Path) -> None:
    common = dict(
        data=str(synthetic_train), arch="seed-cnn", epochs=3, batch_size=16, workers=0, patience=0, augment="default"
    )
    full = train(TrainConfig(out=str(tmp_path / "full"), **common), progress=False)

    def stop_after_first(epoch: int, row: dict) -> None:
        if epoch == 1:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train(TrainConfig(out=str(tmp_path / "cut"), **common), progress=False, on_epoch_end=stop_after_first)
    assert (tmp_path / "cut" / ".checkpoint").is_dir()
    assert not (tmp_path / "cut" / WEIGHTS_FILE).exists()
    resumed = train(TrainConfig(out=str(tmp_path / "cut"), **common), resume=True, progress=False)

    a, b = load_file(str(full / WEIGHTS_FILE)), load_file(str(resumed / WEIGHTS_FILE))
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key].numpy(), b[key].numpy()), key
    ha = json.loads((full / CONFIG_FILE).read_text())["training"]["history"]
    hb = json.loads((resumed / CONFIG_FILE).read_text())["training"]["history"]
    assert [r["train_loss"] for r in ha] == [r["train_loss"] for r in hb]


def test_resume_refuses_changed_settings(tmp_path: Path, synthetic_train: Path) -> None:
    def stop(epoch: int, row: dict) -> None:
        raise _Interrupt

    with pytest.raises(_Interrupt):
        train(
            TrainConfig(data=str(synthetic_train), out=str(tmp_path / "r"), epochs=2, workers=0),
            progress=False,
            on_epoch_end=stop,
        )
    with pytest.raises(InvalidArgumentError, match="lr"):
        train(
            TrainConfig(data=str(synthetic_train), out=str(tmp_path / "r"), epochs=2, workers=0, lr=0.1),
            resume=True,
            progress=False,
        )


def test_resume_refuses_a_checkpoint_of_another_network_in_one_line(tmp_path: Path, synthetic_train: Path) -> None:
    from safetensors.torch import save_file

    from deepfake_detector.models import create_model

    def stop(epoch: int, row: dict) -> None:
        raise _Interrupt

    cfg = TrainConfig(data=str(synthetic_train), out=str(tmp_path / "r"), epochs=2, batch_size=16, workers=0)
    with pytest.raises(_Interrupt):
        train(cfg, progress=False, on_epoch_end=stop)
    checkpoint = tmp_path / "r" / ".checkpoint"
    kept = {name: (checkpoint / name).read_bytes() for name in ("model.safetensors", "state.json")}
    other = {k: v.contiguous() for k, v in create_model("mobilenetv2_100").state_dict().items()}
    for name in ("model.safetensors", "best.safetensors"):
        save_file(other, str(checkpoint / name))
        expected = re.escape(f"{checkpoint.resolve()}: the checkpoint's {name} does not fit")
        with pytest.raises(CheckpointError, match=expected) as info:
            train(cfg, resume=True, progress=False)
        assert len(str(info.value)) < 600 and "missing from the file" in str(info.value)
        (checkpoint / name).write_bytes(kept["model.safetensors"])
    (checkpoint / "state.json").write_text('{"epoch": 1}')
    with pytest.raises(CheckpointError, match="state.json lacks config"):
        train(cfg, resume=True, progress=False)
    (checkpoint / "state.json").write_bytes(kept["state.json"])
    assert (train(cfg, resume=True, progress=False) / WEIGHTS_FILE).is_file()


def test_early_stopping(tmp_path: Path, synthetic_train: Path) -> None:
    # A learning rate of zero never improves after epoch 1, so patience 1 stops at epoch 2.
    bundle = train(
        TrainConfig(data=str(synthetic_train), out=str(tmp_path / "es"), epochs=6, patience=1, lr=1e-12, workers=0),
        progress=False,
    )
    training = json.loads((bundle / CONFIG_FILE).read_text())["training"]
    assert training["stopped_early"] is True
    assert training["epochs_run"] == 2
    assert training["best_epoch"] == 1


def test_val_dir_is_used(tmp_path: Path, synthetic_train: Path, synthetic_test: Path) -> None:
    bundle = train(
        TrainConfig(
            data=str(synthetic_train), out=str(tmp_path / "vd"), epochs=1, val_dir=str(synthetic_test), workers=0
        ),
        progress=False,
    )
    training = json.loads((bundle / CONFIG_FILE).read_text())["training"]
    assert training["n_train"] == 96 and training["n_val"] == 48


def test_output_inside_a_data_folder_is_refused(tmp_path: Path, synthetic_train: Path, synthetic_test: Path) -> None:
    """A bundle where a scan reads images would be data next time (its plot as an image)."""
    from deepfake_detector.training import _check_out

    inside = synthetic_train / "real" / "bundle"
    expected = re.escape(f"out {inside} lies where a scan of the data folder {synthetic_train} reads images")
    with pytest.raises(InvalidArgumentError, match=expected):
        train(TrainConfig(data=str(synthetic_train), out=str(inside), epochs=1, workers=0), progress=False)
    assert not inside.exists()
    inside_val = synthetic_test / "Fake" / "b"
    with pytest.raises(InvalidArgumentError, match="scan of the val_dir folder"):
        train(
            TrainConfig(data=str(synthetic_train), out=str(inside_val), val_dir=str(synthetic_test), epochs=1),
            progress=False,
        )
    assert not inside_val.exists()
    with pytest.raises(InvalidArgumentError, match="scan of the data folder"):
        train(TrainConfig(data=str(synthetic_train / "real" / ".."), out=str(synthetic_train)), progress=False)
    runs = synthetic_train / "runs" / "x"
    beside = TrainConfig(data=str(synthetic_train), out=str(runs), val_dir=str(synthetic_test))
    _check_out(beside)  # below the data folder but outside real/ and fake/: never scanned, so allowed


def test_validation_sharing_training_files_is_refused(tmp_path: Path, synthetic_train: Path) -> None:
    """The threshold and ROC AUC must come from images training never saw."""
    with pytest.raises(DatasetError, match="96 of its 96 files are also training files"):
        train(TrainConfig(data=str(synthetic_train), out=str(tmp_path / "o"), val_dir=str(synthetic_train)))
    manifest = tmp_path / "val.csv"
    shared = sorted((synthetic_train / "fake").rglob("*.png"))[0]
    other = tmp_path / "elsewhere.png"
    other.write_bytes(sorted((synthetic_train / "real").rglob("*.png"))[0].read_bytes())
    manifest.write_text(f"path,label\n{shared},fake\nelsewhere.png,real\n")
    with pytest.raises(DatasetError, match=f"1 of its 2 files .*for example {re.escape(str(shared))}"):
        train(TrainConfig(data=str(synthetic_train), out=str(tmp_path / "o"), val_dir=str(manifest)))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("workers", [0, 2])
def test_undecodable_data_fails_in_one_line(tmp_path: Path, synthetic_train: Path, workers: int) -> None:
    """Truncated files pass the header check; the error must not come wrapped in a worker's traceback."""
    data = tmp_path / "data"
    for label in ("real", "fake"):
        (data / label).mkdir(parents=True)
        for p in sorted((synthetic_train / label).rglob("*.png"))[:3]:
            (data / label / p.name).write_bytes(p.read_bytes()[:200])
    with pytest.raises(DatasetError) as info:
        train(TrainConfig(data=str(data), out=str(tmp_path / "o"), epochs=1, workers=workers), progress=False)
    message = str(info.value)
    assert message.startswith(f"{data}: none of the ") and "images can be decoded" in message
    assert "\n" not in message and "Traceback" not in message


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"arch": "resnet81"}, UnknownModelError),
        ({"epochs": 0}, InvalidArgumentError),
        ({"optimizer": "rmsprop"}, InvalidArgumentError),
        ({"augment": "jpeg=2"}, InvalidArgumentError),
        ({"val_fraction": 1.5}, InvalidArgumentError),
        ({"weight_decay": -1.0}, InvalidArgumentError),
        ({"weight_decay": float("nan")}, InvalidArgumentError),
        ({"lr": float("inf")}, InvalidArgumentError),
        ({"seed": -1}, InvalidArgumentError),
        ({"seed": 2**70}, InvalidArgumentError),
        ({"crop_margin": -0.1}, InvalidArgumentError),
        ({"epochs": "3"}, InvalidArgumentError),
        ({"epochs": 2.5}, InvalidArgumentError),
        ({"arch": 7}, InvalidArgumentError),
        ({"self_blend": True}, InvalidArgumentError),
        ({"imagenet_init": "yes"}, InvalidArgumentError),
    ],
)
def test_bad_settings_fail_before_training(tmp_path: Path, synthetic_train: Path, overrides: dict, error: type) -> None:
    with pytest.raises(error):
        train(TrainConfig(data=str(synthetic_train), out=str(tmp_path / "x"), **overrides), progress=False)
    assert not (tmp_path / "x" / WEIGHTS_FILE).exists()


def test_one_class_data_is_refused(tmp_path: Path, synthetic_train: Path) -> None:
    only_real = tmp_path / "only"
    (only_real / "real").mkdir(parents=True)
    for p in list((synthetic_train / "real").rglob("*.png"))[:6]:
        (only_real / "real" / p.name).write_bytes(p.read_bytes())
    with pytest.raises(DatasetError, match="both real and fake"):
        train(TrainConfig(data=str(only_real), out=str(tmp_path / "o")), progress=False)


def test_pretrained_starts_put_the_new_head_at_even_odds() -> None:
    import torch

    from deepfake_detector.models import create_model
    from deepfake_detector.training import _zero_head

    model = create_model("mobilenetv2_100").eval()
    x = torch.randn(2, 3, 64, 64)
    assert model(x).abs().sum() > 0
    _zero_head(model)
    assert torch.equal(model(x), torch.zeros(2, 1))
    seed = create_model("seed-cnn")
    before = [p.clone() for p in seed.parameters()]
    _zero_head(seed)  # no timm classifier: left alone
    assert all(torch.equal(a, b) for a, b in zip(before, seed.parameters()))


def test_self_blend_turns_reals_into_labelled_fakes(synthetic_train: Path) -> None:
    from deepfake_detector.data.dataset import scan_folder
    from deepfake_detector.data.torch_dataset import ImageDataset
    from deepfake_detector.preprocess import Preprocessing

    reals = [s for s in scan_folder(synthetic_train) if s.target == 0][:4]
    plain = ImageDataset(reals, Preprocessing(128), seed=1)
    blended = ImageDataset(reals, Preprocessing(128), seed=1, self_blend_p=0.999)
    again = ImageDataset(reals, Preprocessing(128), seed=1, self_blend_p=0.999)
    for i in range(len(reals)):
        x0, y0, _ = plain[i]
        x1, y1, _ = blended[i]
        assert y0 == 0 and y1 == 1
        assert not np.array_equal(x0.numpy(), x1.numpy())
        assert np.array_equal(x1.numpy(), again[i][0].numpy()), "reproducible from (seed, epoch, index)"


def test_self_blend_trains_on_real_images_only(tmp_path: Path, synthetic_train: Path, synthetic_test: Path) -> None:
    only_real = tmp_path / "reals"
    (only_real / "real").mkdir(parents=True)
    for p in sorted((synthetic_train / "real").rglob("*.png"))[:16]:
        (only_real / "real" / p.name).write_bytes(p.read_bytes())
    with pytest.raises(DatasetError, match="both real and fake"):
        train(TrainConfig(data=str(only_real), out=str(tmp_path / "no"), val_dir=str(synthetic_test)), progress=False)
    bundle = train(
        TrainConfig(
            data=str(only_real),
            out=str(tmp_path / "sbi"),
            val_dir=str(synthetic_test),
            epochs=1,
            self_blend=0.5,
            workers=0,
            batch_size=8,
        ),
        progress=False,
    )
    config = json.loads((bundle / CONFIG_FILE).read_text())
    assert config["training"]["config"]["self_blend"] == 0.5
    with pytest.raises(InvalidArgumentError, match="self_blend"):
        train(TrainConfig(data=str(only_real), out=str(tmp_path / "x"), self_blend=1.5), progress=False)
    for parts, blend in ((-0.1, 0.5), (1.5, 0.5), (0.3, 0.0)):
        with pytest.raises(InvalidArgumentError, match="self_blend_parts"):
            train(
                TrainConfig(data=str(only_real), out=str(tmp_path / "x"), self_blend=blend, self_blend_parts=parts),
                progress=False,
            )


def test_part_self_blends_use_landmarks_found_before_training(
    synthetic_train: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """self_blend_parts finds each real image's landmarks once and blends face parts with them."""
    from doubles import FixedFaces

    from deepfake_detector.data.dataset import scan_folder
    from deepfake_detector.data.torch_dataset import ImageDataset
    from deepfake_detector.faces.base import FaceBox
    from deepfake_detector.preprocess import Preprocessing
    from deepfake_detector.training import _real_landmarks

    everything = scan_folder(synthetic_train)
    samples = [s for s in everything if s.target == 0][:3] + [s for s in everything if s.target == 1][:3]
    points = ((30.0, 40.0), (60.0, 40.0), (45.0, 60.0), (34.0, 80.0), (56.0, 80.0))
    monkeypatch.setattr(
        "deepfake_detector.faces.create_face_detector",
        lambda name: FixedFaces([FaceBox(10, 10, 80, 100, 0.99, points)]),
    )
    dataset = ImageDataset(samples, Preprocessing(128), seed=3, self_blend_p=0.999)
    found = _real_landmarks(dataset, progress=False)
    reals = {i for i, s in enumerate(samples) if s.target == 0}
    assert reals and set(found) == reals
    parts = ImageDataset(
        samples,
        Preprocessing(128),
        seed=3,
        self_blend_p=0.999,
        landmarks=found,
        blend_config=SelfBlendConfig(part_p=1.0),
    )
    whole = ImageDataset(samples, Preprocessing(128), seed=3, self_blend_p=0.999)
    for i in reals:
        assert parts[i][1] == 1
        assert not np.array_equal(parts[i][0].numpy(), whole[i][0].numpy())


def test_recipes_set_options_and_the_command_line_wins(tmp_path: Path, synthetic_train: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f'[train]\ndata = "{synthetic_train}"\nout = "{tmp_path / "from-recipe"}"\nepochs = 3\nlr = 0.01\n'
        "self_blend = 0.2\n"
    )
    config = TrainConfig.from_recipe(recipe, epochs=1)
    assert (config.epochs, config.lr, config.self_blend, config.data) == (1, 0.01, 0.2, str(synthetic_train))
    repo_recipe = TrainConfig.from_recipe(
        Path(__file__).resolve().parents[1] / "recipes" / "default.toml", data="train.csv", out="out"
    )
    assert repo_recipe.arch == "mobilenetv2_100" and repo_recipe.resolved().imagenet_init
    (tmp_path / "bad.toml").write_text('[train]\nepoch = 3\ndata = "x"\nout = "y"\n')
    with pytest.raises(InvalidArgumentError, match="bad.toml.*epoch"):
        TrainConfig.from_recipe(tmp_path / "bad.toml")
    (tmp_path / "none.toml").write_text("[model]\narch = 'x'\n")
    with pytest.raises(InvalidArgumentError, match="\\[train\\] table"):
        TrainConfig.from_recipe(tmp_path / "none.toml")
    (tmp_path / "broken.toml").write_text("[train\n")
    with pytest.raises(InvalidArgumentError, match="unreadable recipe"):
        TrainConfig.from_recipe(tmp_path / "broken.toml")
    for line, field in (('lr = "fast"', "lr"), ("augment = 5", "augment"), ('patience = "x"', "patience")):
        (tmp_path / "typed.toml").write_text(f'[train]\ndata = "x"\nout = "y"\n{line}\n')
        with pytest.raises(InvalidArgumentError, match=f"typed.toml: {field} must be"):
            TrainConfig.from_recipe(tmp_path / "typed.toml")

    from deepfake_detector.cli import main

    out = tmp_path / "cli-run"
    assert (
        main(["train", "--recipe", str(recipe), "--out", str(out), "--epochs", "1", "--workers", "0", "--quiet"]) == 0
    )
    saved = json.loads((out / CONFIG_FILE).read_text())["training"]["config"]
    assert saved["epochs"] == 1 and saved["lr"] == 0.01 and saved["self_blend"] == 0.2
    assert main(["train", "--out", str(tmp_path / "x"), "--quiet"]) == 1, "no data anywhere"


def test_cli_trains_with_part_self_blends(
    tmp_path: Path, synthetic_train: Path, synthetic_test: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--self-blend-parts reaches training: each real training image's landmarks are looked up
    once, and the run records the share."""
    from doubles import FixedFaces

    from deepfake_detector.cli import main
    from deepfake_detector.faces.base import FaceBox

    looked_at: list[tuple[int, ...]] = []

    class Counting(FixedFaces):
        def detect(self, image: np.ndarray) -> list[FaceBox]:
            looked_at.append(image.shape)
            return super().detect(image)

    points = ((20.0, 24.0), (40.0, 24.0), (30.0, 34.0), (22.0, 44.0), (38.0, 44.0))
    monkeypatch.setattr(
        "deepfake_detector.faces.create_face_detector", lambda name: Counting([FaceBox(5, 5, 50, 50, 0.99, points)])
    )
    out = tmp_path / "parts"
    args = ["train", str(synthetic_train), "--val-dir", str(synthetic_test), "--out", str(out), "--epochs", "1"]
    args += ["--self-blend", "0.5", "--self-blend-parts", "0.5", "--workers", "0", "--batch-size", "8", "--quiet"]
    assert main(args) == 0
    reals = len(list((synthetic_train / "real").rglob("*.png")))
    assert len(looked_at) == reals > 0
    assert json.loads((out / CONFIG_FILE).read_text())["training"]["config"]["self_blend_parts"] == 0.5
