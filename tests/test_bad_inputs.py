"""Bad inputs a user can hand the package: each must end in a typed error that names the culprit.

Training here is tiny (one or two epochs on a 24-image copy of ``synthetic_train``), and
bundles that need no training are written with ``save_bundle`` directly, so this file
stays fast.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from deepfake_detector import Detector
from deepfake_detector.bundle import CONFIG_FILE, WEIGHTS_FILE, BundleConfig, save_bundle
from deepfake_detector.checkpoint import CHECKPOINT_DIR
from deepfake_detector.cli import main
from deepfake_detector.data.dataset import load_dataset
from deepfake_detector.devices import pick_device
from deepfake_detector.errors import (
    BundleError,
    CheckpointError,
    DatasetError,
    EmptyFileError,
    InvalidArgumentError,
    MediaNotFoundError,
    MediaTooLargeError,
    TrainingError,
    UnsupportedMediaError,
)
from deepfake_detector.media.files import expand_inputs
from deepfake_detector.media.image import probe_image
from deepfake_detector.metrics import compute_metrics
from deepfake_detector.models import create_model, get_spec
from deepfake_detector.preprocess import Preprocessing
from deepfake_detector.threshold import choose_threshold, is_fake
from deepfake_detector.training import TrainConfig, train

N_PER_CLASS = 12


def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def png(path: Path, size: tuple[int, int] = (32, 24), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def seed_bundle(out: Path, **config: object) -> Path:
    spec = get_spec("seed-cnn")
    bundle_config = BundleConfig(
        arch="seed-cnn", preprocessing=Preprocessing(spec.input_size, spec.mean, spec.std), **config
    )
    return save_bundle(out, bundle_config, create_model("seed-cnn"))


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory, synthetic_train: Path) -> Path:
    """The first images of each class of ``synthetic_train``, same layout (real/scenes, fake/checkerboard)."""
    root = tmp_path_factory.mktemp("small")
    for label in ("real", "fake"):
        for src in sorted((synthetic_train / label).rglob("*.png"))[:N_PER_CLASS]:
            dst = root / src.relative_to(synthetic_train)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    return root


def tiny(data: Path, out: Path, **kwargs: object) -> TrainConfig:
    return TrainConfig(data=str(data), out=str(out), **{"epochs": 1, "workers": 0, "batch_size": 8, **kwargs})


class _Interrupt(Exception):
    pass


def _stop_after_first(epoch: int, row: dict) -> None:
    if epoch == 1:
        raise _Interrupt


# --------------------------------------------------------------------------- 1. pretrained offline


def test_pretrained_timm_offline_fails_fast_with_init_weights_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants  # imported first: the variable is set after, as in a notebook

    before = huggingface_hub.constants.HF_HUB_OFFLINE
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(InvalidArgumentError) as info:
        create_model("resnet18", pretrained=True)
    assert time.perf_counter() - started < 15, "must not retry the network when HF_HUB_OFFLINE=1"
    assert "--init-weights" in str(info.value)
    assert "resnet18" in str(info.value)
    assert huggingface_hub.constants.HF_HUB_OFFLINE == before, "the global setting is restored"


def test_seed_cnn_has_no_pretrained_weights() -> None:
    with pytest.raises(InvalidArgumentError, match="import-keras"):
        create_model("seed-cnn", pretrained=True)


# --------------------------------------------------------------------------- 2. manifests


@pytest.mark.parametrize(
    "content",
    [b"path,label\n\xff\xfe\xfa.png,real\n", bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8))],
    ids=["invalid-utf8", "binary-garbage"],
)
def test_unreadable_manifest_names_the_file(tmp_path: Path, content: bytes) -> None:
    manifest = tmp_path / "garbage.csv"
    manifest.write_bytes(content)
    with pytest.raises(DatasetError) as info:
        load_dataset(manifest)
    assert str(manifest) in str(info.value)


# --------------------------------------------------------------------------- 3. devices


def test_unknown_device_name() -> None:
    with pytest.raises(InvalidArgumentError, match="bogus"):
        pick_device("bogus")


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_asked_for_without_gpu(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InvalidArgumentError, match="no CUDA GPU"):
        pick_device(name)
    assert pick_device("auto") == torch.device("cpu")


# --------------------------------------------------------------------------- 4. checkpoints


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory: pytest.TempPathFactory, small_data: Path) -> Path:
    """An output folder holding only the checkpoint of a 2-epoch run stopped after epoch 1."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    with pytest.raises(_Interrupt):
        train(tiny(small_data, out, epochs=2), progress=False, on_epoch_end=_stop_after_first)
    assert listing(out)[0] == CHECKPOINT_DIR and not (out / WEIGHTS_FILE).exists()
    return out


def test_resume_with_damaged_checkpoint(tmp_path: Path, small_data: Path, interrupted_run: Path) -> None:
    out = shutil.copytree(interrupted_run, tmp_path / "run")
    (out / CHECKPOINT_DIR / "state.json").write_text("not json")
    with pytest.raises(CheckpointError) as info:
        train(tiny(small_data, out, epochs=2), resume=True, progress=False)
    assert "without --resume" in str(info.value)
    assert str(out / CHECKPOINT_DIR) in str(info.value)
    assert not (out / WEIGHTS_FILE).exists()


def test_resume_after_crash_between_checkpoint_renames(tmp_path: Path, small_data: Path, interrupted_run: Path) -> None:
    out = shutil.copytree(interrupted_run, tmp_path / "run")
    (out / CHECKPOINT_DIR).rename(out / (CHECKPOINT_DIR + ".old"))
    epochs_run: list[int] = []
    bundle = train(
        tiny(small_data, out, epochs=2),
        resume=True,
        progress=False,
        on_epoch_end=lambda epoch, row: epochs_run.append(epoch),
    )
    assert epochs_run == [2], "resumed after epoch 1 rather than starting over"
    assert bundle == out.resolve()
    assert (out / WEIGHTS_FILE).is_file()
    config = json.loads((out / CONFIG_FILE).read_text())
    assert [row["epoch"] for row in config["training"]["history"]] == [1, 2]
    assert not [p.name for p in out.iterdir() if p.name.startswith(CHECKPOINT_DIR)]
    Detector.load(out)


# --------------------------------------------------------------------------- 5. output folders


def test_train_refuses_a_folder_of_user_files(
    tmp_path: Path, small_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes\n")
    before = listing(tmp_path)
    with pytest.raises(BundleError) as info:
        train(tiny(small_data, folder), progress=False)
    assert str(folder.resolve()) in str(info.value) and "notes.txt" in str(info.value)

    code, out, err = cli(capsys, "train", small_data, "--out", folder, "--epochs", "1", "--workers", "0", "--quiet")
    assert code == 1
    assert out == ""
    assert str(folder.resolve()) in err and "Traceback" not in err
    assert (folder / "notes.txt").read_text() == "my notes\n"
    assert not (folder / WEIGHTS_FILE).exists()
    assert listing(tmp_path) == before, "nothing written, not even a temporary folder"


def test_train_overwrites_a_bundle_and_keeps_extra_files(tmp_path: Path, small_data: Path) -> None:
    out = seed_bundle(tmp_path / "bundle", name="the-old-one")
    (out / "report.md").write_text("# kept\n")
    old_weights = (out / WEIGHTS_FILE).read_bytes()
    train(tiny(small_data, out), progress=False)
    config = json.loads((out / CONFIG_FILE).read_text())
    assert config["name"] == "bundle" and config["training"]["epochs_run"] == 1
    assert (out / WEIGHTS_FILE).read_bytes() != old_weights
    assert (out / "report.md").read_text() == "# kept\n"
    assert not [p.name for p in tmp_path.iterdir() if p.name != "bundle"], "no temporary folders left beside it"


# --------------------------------------------------------------------------- 6. predict --output


def test_predict_output_into_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = seed_bundle(tmp_path / "bundle")
    image = png(tmp_path / "x.png")
    target = tmp_path / "no" / "x.csv"
    code, out, err = cli(capsys, "predict", image, "--model", bundle, "--format", "csv", "--output", target)
    assert code == 1
    assert str(target) in err and "Traceback" not in err
    assert out == ""
    assert not (tmp_path / "no").exists()


# --------------------------------------------------------------------------- 7. --init-weights


def test_train_init_weights_through_the_cli(
    tmp_path: Path, small_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ("--epochs", "1", "--workers", "0", "--batch-size", "8", "--quiet")
    good = tmp_path / "seed.safetensors"
    save_file({k: v.contiguous() for k, v in create_model("seed-cnn").state_dict().items()}, str(good))
    code, out, err = cli(capsys, "train", small_data, "--out", tmp_path / "good", "--init-weights", good, *common)
    assert code == 0, err
    assert (tmp_path / "good" / WEIGHTS_FILE).is_file()
    assert json.loads((tmp_path / "good" / CONFIG_FILE).read_text())["training"]["config"]["init_weights"] == str(good)

    unrelated = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(4, 4), "head.bias": torch.zeros(2)}, str(unrelated))
    code, out, err = cli(capsys, "train", small_data, "--out", tmp_path / "bad", "--init-weights", unrelated, *common)
    assert code == 1
    assert str(unrelated) in err and "none of its 2 tensors match" in err
    assert not (tmp_path / "bad" / WEIGHTS_FILE).exists()

    missing = tmp_path / "absent.safetensors"
    code, out, err = cli(capsys, "train", small_data, "--out", tmp_path / "bad", "--init-weights", missing, *common)
    assert code == 1
    assert str(missing) in err and "not found" in err


# --------------------------------------------------------------------------- 8. divergence


def test_huge_learning_rate_stops_with_a_hint(tmp_path: Path, small_data: Path) -> None:
    with pytest.raises(TrainingError) as info:
        train(tiny(small_data, tmp_path / "run", lr=1e6, optimizer="sgd"), progress=False)
    assert "--lr" in str(info.value) and "diverged" in str(info.value)
    assert not (tmp_path / "run" / WEIGHTS_FILE).exists()


# --------------------------------------------------------------------------- 9. unreadable training files


def test_unreadable_training_files_are_left_out(
    tmp_path: Path, small_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = shutil.copytree(small_data, tmp_path / "data")
    (data / "real" / "scenes" / "zero_bytes.png").write_bytes(b"")
    (data / "fake" / "checkerboard" / "actually_text.png").write_text("this is not a picture\n")
    capsys.readouterr()
    bundle = train(tiny(data, tmp_path / "run"), progress=True)
    err = capsys.readouterr().err
    training = json.loads((bundle / CONFIG_FILE).read_text())["training"]
    assert training["n_train"] + training["n_val"] == 2 * N_PER_CLASS
    assert "zero_bytes.png" in err and "actually_text.png" in err


# --------------------------------------------------------------------------- 10. bundle config errors


@pytest.fixture(scope="module")
def plain_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return seed_bundle(tmp_path_factory.mktemp("plain") / "bundle")


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("threshold", "x", "threshold must be a number in [0, 1]"),
        ("format_version", "2", "format_version must be an integer"),
        ("format_version", 99, "newer"),
        ("labels", ["a", "b"], "labels"),
        ("arch_kwargs", {"bogus": 1}, "bogus"),
    ],
)
def test_edited_config_is_refused(tmp_path: Path, plain_bundle: Path, key: str, value: object, reason: str) -> None:
    folder = shutil.copytree(plain_bundle, tmp_path / "edited")
    config = json.loads((folder / CONFIG_FILE).read_text())
    config[key] = value
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(BundleError) as info:
        Detector.load(folder)
    assert str(folder / CONFIG_FILE) in str(info.value)
    assert reason in str(info.value)


# --------------------------------------------------------------------------- 11. choose_threshold


def _best_j(y: np.ndarray, p: np.ndarray) -> float:
    """Youden's J over every way a threshold can split the scores, by brute force."""
    pos, neg = np.sort(p[y == 1]), np.sort(p[y == 0])
    cuts = np.append(np.unique(p), np.inf)
    tpr = 1.0 - np.searchsorted(pos, cuts, side="left") / pos.size
    fpr = 1.0 - np.searchsorted(neg, cuts, side="left") / neg.size
    return float((tpr - fpr).max())


def _j_at(y: np.ndarray, p: np.ndarray, threshold: float) -> float:
    pred = is_fake(p, threshold)
    return float(pred[y == 1].mean() - pred[y == 0].mean())


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("decimals", [None, 2], ids=["distinct", "ties"])
def test_choose_threshold_splits_as_the_best_j(seed: int, decimals: int | None) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    p = np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0.001, 0.999)
    if decimals is not None:
        p = p.round(decimals)
    t = choose_threshold(y, p)
    assert 0.0 <= t <= 1.0
    assert _j_at(y, p, t) == pytest.approx(_best_j(y, p), abs=1e-12)
    assert not np.any(p == t), "a validation score sits exactly on the threshold"


def test_choose_threshold_is_fast_on_many_scores() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200_000)
    p = rng.random(200_000) * 0.7 + 0.3 * y
    choose_threshold(y[:100], p[:100])  # imports out of the timing
    started = time.perf_counter()
    t = choose_threshold(y, p)
    assert time.perf_counter() - started < 1.0
    assert _j_at(y, p, t) == pytest.approx(_best_j(y, p), abs=1e-12)


@pytest.mark.parametrize("y", [[0, 0, 0], [1, 1, 1]])
def test_choose_threshold_with_one_class(y: list[int]) -> None:
    assert choose_threshold(np.array(y), np.array([0.1, 0.9, 0.7])) == 0.5


# --------------------------------------------------------------------------- 12. per-group AUC


def test_mixed_group_gets_its_own_auc() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = np.array([0] * 10 + [1] * 10 + [0] * 6 + [1] * 8)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    groups = ["ffpp"] * 20 + ["celeb-real"] * 6 + ["celeb-fake"] * 8
    m = compute_metrics(y, p, 0.5, groups)["per_group"]
    mixed = np.arange(20)
    assert m["ffpp"]["label"] == "mixed"
    assert m["ffpp"]["roc_auc_score"] == pytest.approx(roc_auc_score(y[mixed], p[mixed]), abs=1e-12)
    assert m["ffpp"]["roc_auc_score"] != pytest.approx(roc_auc_score(y, p), abs=1e-6), "not the overall AUC"
    assert m["celeb-real"]["roc_auc_score"] is None and m["celeb-fake"]["roc_auc_score"] is None
    assert m["celeb-fake"]["roc_auc_score_vs_real"] is not None


# --------------------------------------------------------------------------- 13. expand_inputs


def test_expand_inputs(tmp_path: Path) -> None:
    top = png(tmp_path / "set" / "top.png")
    deep = png(tmp_path / "set" / "a" / "b" / "deep.jpg")
    (tmp_path / "set" / "a" / "notes.txt").write_text("x")
    assert expand_inputs([tmp_path / "set"]) == sorted([str(deep), str(top)])

    assert expand_inputs([str(tmp_path / "se?")]) == sorted([str(deep), str(top)]), "a glob matching a folder recurses"

    loose = tmp_path / "loose"
    image = png(loose / "pic.png")
    (loose / "pic.txt").write_text("x")
    assert expand_inputs([str(loose / "pic.*")]) == [str(image)]

    nothing = str(tmp_path / "nowhere" / "*.png")
    assert expand_inputs([nothing]) == [nothing]

    explicit = loose / "pic.txt"
    assert expand_inputs([explicit, image]) == [str(explicit), str(image)]


# --------------------------------------------------------------------------- 14. CLI exit statuses


def test_cli_version_help_and_missing_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.startswith("deepfake-detector ")
    code, out, _ = cli(capsys, "--help")
    assert code == 0 and "usage: deepfake-detector" in out
    code, out, err = cli(capsys, "train")
    assert code == 1 and "needs data and out" in err and out == ""


# --------------------------------------------------------------------------- 15. probe_image


def test_probe_image_errors_and_size(tmp_path: Path) -> None:
    with pytest.raises(MediaNotFoundError):
        probe_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(EmptyFileError):
        probe_image(tmp_path / "empty.png")
    (tmp_path / "text.png").write_text("hello, I am text\n")
    with pytest.raises(UnsupportedMediaError) as info:
        probe_image(tmp_path / "text.png")
    assert str(tmp_path / "text.png") in str(info.value)
    big = png(tmp_path / "big.png", size=(100, 100))
    with pytest.raises(MediaTooLargeError, match="10,000 pixels"):
        probe_image(big, max_pixels=10)
    assert probe_image(big) == (100, 100)
    assert probe_image(png(tmp_path / "wide.png", size=(30, 20))) == (30, 20)
