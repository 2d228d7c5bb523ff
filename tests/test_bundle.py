"""A bundle's config.json is checked when the bundle is loaded: values that would make every
score silently wrong, or fail later with a confusing error, are refused with a BundleError
naming the file and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from deepfake_detector import Detector
from deepfake_detector.bundle import (
    CONFIG_FILE,
    MAX_NAMES_SHOWN,
    WEIGHTS_FILE,
    BundleConfig,
    load_bundle,
    read_config,
    save_bundle,
    state_mismatch,
)
from deepfake_detector.errors import BundleError
from deepfake_detector.models import create_model, get_spec
from deepfake_detector.preprocess import MAX_INPUT_SIZE, MIN_INPUT_SIZE, Preprocessing
from deepfake_detector.shipped import default_model_dir

NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def seed_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid bundle of the small seed-cnn with random weights: each test edits a copy of its config."""
    spec = get_spec("seed-cnn")
    config = BundleConfig(arch="seed-cnn", preprocessing=Preprocessing(spec.input_size, spec.mean, spec.std))
    return save_bundle(tmp_path_factory.mktemp("seed") / "bundle", config, create_model("seed-cnn"))


def _edited(source: Path, target: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of bundle ``source`` at ``target`` whose config went through ``edit``."""
    target.mkdir()
    (target / WEIGHTS_FILE).symlink_to(source / WEIGHTS_FILE)
    config = json.loads((source / CONFIG_FILE).read_text())
    edit(config)
    (target / CONFIG_FILE).write_text(json.dumps(config))  # NaN and Infinity as Python's json writes them
    return target


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit setting ``key`` (``"preprocessing.std"`` reaches into a section) to ``value``."""
    *sections, last = key.split(".")

    def edit(config: dict[str, Any]) -> None:
        for section in sections:
            config = config[section]
        config[last] = value

    return edit


REFUSED = [
    ("preprocessing.std", [0, 0, 0]),
    ("preprocessing.std", [NAN, 1, 1]),
    ("preprocessing.std", ["nan", 1, 1]),
    ("preprocessing.std", [-0.2, 0.2, 0.2]),
    ("preprocessing.std", [INF, 1, 1]),
    ("preprocessing.std", [1e-45, 1, 1]),  # positive, but zero in float32: the inputs would be infinite
    ("preprocessing.std", 0.5),
    ("preprocessing.mean", [0.5]),
    ("preprocessing.mean", [0.5, 0.5, 0.5, 0.5]),
    ("preprocessing.mean", [NAN, 0, 0]),
    ("preprocessing.mean", [-INF, 0, 0]),
    ("preprocessing.mean", [True, 0, 0]),
    ("preprocessing.mean", None),
    ("preprocessing.input_size", 224.7),
    ("preprocessing.input_size", 224.0),
    ("preprocessing.input_size", True),
    ("preprocessing.input_size", "224"),
    ("preprocessing.input_size", MIN_INPUT_SIZE - 1),
    ("preprocessing.input_size", MAX_INPUT_SIZE + 1),
    ("preprocessing.input_size", 100_000),
    ("preprocessing.input_size", -224),
    ("preprocessing.interpolation", 5),
    ("preprocessing.face_detector", 5),
    ("preprocessing.crop", "abc"),
    ("preprocessing", [1, 2]),
    ("threshold", NAN),
    ("threshold", INF),
    ("threshold", "0.5"),
    ("threshold", True),
    ("threshold", 1.5),
    ("uncertain", {"band": NAN}),
    ("arch", 5),
    ("arch", None),
    ("arch", ""),
    ("arch", "no-such-network"),
    ("labels", "real"),
    ("name", 12),
    ("explain_layer", ["features"]),
    ("training", [1]),
    ("metrics", "x"),
]


@pytest.mark.parametrize(("key", "value"), REFUSED, ids=[f"{k}={v!r}" for k, v in REFUSED])
def test_a_bad_config_value_is_refused_on_load_naming_file_and_field(
    seed_bundle: Path, tmp_path: Path, key: str, value: Any
) -> None:
    folder = _edited(seed_bundle, tmp_path / "bad", _set(key, value))
    with pytest.raises(BundleError) as info:
        Detector.load(folder)
    message = str(info.value)
    assert message.startswith(f"{folder / CONFIG_FILE}: ")
    assert key.split(".")[-1] in message


def test_a_preprocessing_without_input_size_is_refused(seed_bundle: Path, tmp_path: Path) -> None:
    folder = _edited(seed_bundle, tmp_path / "bad", lambda config: config["preprocessing"].pop("input_size"))
    with pytest.raises(BundleError, match="preprocessing.input_size is missing"):
        read_config(folder)


def test_valid_values_are_kept_as_plain_floats_and_ints(seed_bundle: Path, tmp_path: Path) -> None:
    def edit(config: dict[str, Any]) -> None:
        config["threshold"] = 1
        config["preprocessing"].update(input_size=MAX_INPUT_SIZE, mean=[0, 1, -2], std=[1, 0.5, 3])

    config = read_config(_edited(seed_bundle, tmp_path / "edited", edit))
    assert config.threshold == 1.0 and isinstance(config.threshold, float)
    assert config.preprocessing.mean == (0.0, 1.0, -2.0) and config.preprocessing.std == (1.0, 0.5, 3.0)
    assert all(isinstance(v, float) for v in config.preprocessing.mean + config.preprocessing.std)
    assert BundleConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_weights_of_another_architecture_get_a_short_message(seed_bundle: Path, tmp_path: Path) -> None:
    folder = _edited(seed_bundle, tmp_path / "other-arch", _set("arch", "resnet18"))
    with pytest.raises(BundleError) as info:
        load_bundle(folder)
    message = str(info.value)
    assert message.startswith(f"{folder / WEIGHTS_FILE}: weights do not fit architecture 'resnet18'")
    assert "tensors missing from the file" in message and ", ...)" in message
    assert len(message) < 1000


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\x02\x00\x00\x00\x00\x00\x00\x00{}", "the file holds no tensors"),
        (b"garbage" * 100, "unreadable weights"),
        (b"", "unreadable weights"),
    ],
    ids=["no tensors", "garbage", "empty"],
)
def test_broken_weights_get_a_short_message(seed_bundle: Path, tmp_path: Path, content: bytes, reason: str) -> None:
    folder = _edited(seed_bundle, tmp_path / "broken", lambda config: None)
    (folder / WEIGHTS_FILE).unlink()
    (folder / WEIGHTS_FILE).write_bytes(content)
    with pytest.raises(BundleError) as info:
        Detector.load(folder)
    assert str(folder / WEIGHTS_FILE) in str(info.value) and reason in str(info.value)
    assert len(str(info.value)) < 500


def test_state_mismatch_counts_and_lists_the_first_names() -> None:
    import torch

    expected = {f"layer{i}.weight": torch.zeros(2) for i in range(10)}
    assert state_mismatch(expected, dict(expected)) == ""
    found = {"layer0.weight": torch.zeros(3), "extra.bias": torch.zeros(1)}
    message = state_mismatch(expected, found)
    assert message.startswith("9 tensors missing from the file (layer1.weight, layer2.weight, layer3.weight, ...)")
    assert "1 tensor the network does not have (extra.bias)" in message
    assert "1 tensor of another shape (layer0.weight: [3] in the file, [2] in the network)" in message
    assert message.count(", ") < 2 * MAX_NAMES_SHOWN + 4


def test_the_shipped_bundle_still_loads() -> None:
    config, model = load_bundle(default_model_dir())
    assert config.arch and 0.0 <= config.threshold <= 1.0
    assert len(config.preprocessing.mean) == 3 and all(s > 0 for s in config.preprocessing.std)
    assert not model.training


def test_weights_holding_nan_are_refused_on_load_and_on_save(seed_bundle: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    folder = _edited(seed_bundle, tmp_path / "nan", lambda config: None)
    state = load_file(str(folder / WEIGHTS_FILE))
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = torch.full_like(state[name], float("nan"))
    (folder / WEIGHTS_FILE).unlink()
    save_file(state, str(folder / WEIGHTS_FILE))
    refused = rf"1 tensor holding NaN or infinite values \({name}\).*score every input NaN"
    with pytest.raises(BundleError, match=refused):
        Detector.load(folder)
    config, model = load_bundle(seed_bundle)
    with torch.no_grad():
        next(model.parameters()).fill_(float("inf"))
    with pytest.raises(BundleError, match="not saved: 1 tensor holding NaN or infinite values"):
        save_bundle(tmp_path / "diverged", config, model)
    assert not (tmp_path / "diverged" / WEIGHTS_FILE).exists()
