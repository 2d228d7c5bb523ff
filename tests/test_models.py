"""Model registry, initial weights, bundles on disk and the shared preprocessing."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from deepfake_detector.bundle import (
    CONFIG_FILE,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    BundleConfig,
    load_bundle,
    read_config,
    save_bundle,
)
from deepfake_detector.errors import BundleError, UnknownModelError
from deepfake_detector.models import (
    count_parameters,
    create_model,
    get_spec,
    list_models,
    load_init_weights,
    register_model,
    registry,
)
from deepfake_detector.preprocess import Preprocessing

# --------------------------------------------------------------------------- registry


def test_list_models_has_the_documented_architectures() -> None:
    names = list_models()
    assert {"seed-cnn", "resnet18", "efficientnet_b0", "xception"} <= set(names)
    assert names == sorted(names)
    assert list_models("efficientnet*") == [n for n in names if n.startswith("efficientnet")]
    assert "seed-cnn" not in list_models("efficientnet*")


def test_seed_cnn_parameter_count() -> None:
    assert count_parameters("seed-cnn") == 3_304_769
    # the meta-device count agrees with a real instance
    torch.manual_seed(0)
    assert sum(p.numel() for p in create_model("seed-cnn").parameters()) == 3_304_769


@pytest.mark.parametrize("name", list_models())
def test_each_model_maps_a_batch_to_one_logit(name: str) -> None:
    spec = get_spec(name)
    torch.manual_seed(0)
    model = create_model(name).eval()
    s = spec.input_size
    x = torch.randn(2, 3, s, s)
    with torch.no_grad():
        y = model(x)
    assert tuple(y.shape) == (2, 1)
    assert torch.isfinite(y).all()
    assert spec.explain_layer and spec.explain_layer in dict(model.named_modules())


def test_unknown_model_lists_close_matches_and_known_names() -> None:
    with pytest.raises(UnknownModelError) as info:
        create_model("resnet81")
    message = str(info.value)
    assert "'resnet81'" in message
    assert "Did you mean 'resnet18'" in message
    for known in list_models():
        assert known in message
    with pytest.raises(UnknownModelError) as info:
        get_spec("totally-unrelated-name")
    assert "Did you mean" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_register_model_twice_warns_and_later_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    def first(*, pretrained: bool = False) -> torch.nn.Module:
        return torch.nn.Linear(1, 1)

    def second(*, pretrained: bool = False) -> torch.nn.Module:
        return torch.nn.Linear(1, 2)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_model("test-dup", input_size=16)(first)
    with pytest.warns(UserWarning, match="test-dup"):
        register_model("test-dup", input_size=32)(second)
    assert get_spec("test-dup").input_size == 32
    assert create_model("test-dup").out_features == 2


def test_create_model_drops_none_kwargs() -> None:
    model = create_model("seed-cnn", input_size=None)
    assert model.feature_side == 14
    small = create_model("seed-cnn", input_size=64)
    assert small.feature_side == 6


# --------------------------------------------------------------------------- init weights


def test_load_init_weights_copies_matching_tensors(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = create_model("seed-cnn")
    torch.manual_seed(2)
    target = create_model("seed-cnn")
    assert not torch.equal(source.features[0].weight, target.features[0].weight)
    path = tmp_path / "init.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))

    loaded, skipped = load_init_weights(target, path)
    assert skipped == []
    assert loaded == sorted(source.state_dict())
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k


def test_load_init_weights_skips_head_of_other_shape(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = create_model("seed-cnn", input_size=128)
    torch.manual_seed(2)
    target = create_model("seed-cnn", input_size=64)  # first dense layer has another shape
    head_before = target.classifier[1].weight.clone()
    path = tmp_path / "init.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))

    loaded, skipped = load_init_weights(target, path)
    assert skipped == ["classifier.1.weight"]
    assert "classifier.1.bias" in loaded and "features.0.weight" in loaded
    assert torch.equal(target.classifier[1].weight, head_before)
    assert torch.equal(target.features[0].weight, source.features[0].weight)
    assert torch.equal(target.classifier[4].weight, source.classifier[4].weight)


def test_load_init_weights_errors(tmp_path: Path) -> None:
    model = create_model("seed-cnn")
    unrelated = tmp_path / "unrelated.safetensors"
    save_file({"encoder.weight": torch.zeros(3, 3), "features.0.weight": torch.zeros(5)}, str(unrelated))
    with pytest.raises(BundleError) as info:
        load_init_weights(model, unrelated)
    assert str(unrelated) in str(info.value) and "none of its 2 tensors" in str(info.value)

    missing = tmp_path / "missing.safetensors"
    with pytest.raises(BundleError) as info:
        load_init_weights(model, missing)
    assert str(missing) in str(info.value)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not safetensors")
    with pytest.raises(BundleError) as info:
        load_init_weights(model, garbage)
    assert str(garbage) in str(info.value)


# --------------------------------------------------------------------------- bundles


def _seed_config(**kwargs) -> BundleConfig:
    spec = get_spec("seed-cnn")
    return BundleConfig(arch="seed-cnn", preprocessing=Preprocessing(spec.input_size, spec.mean, spec.std), **kwargs)


def test_bundle_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = create_model("seed-cnn").eval()
    config = _seed_config(threshold=0.37, name="unit", metrics={"validation": {"roc_auc_score": 0.9}})
    out = save_bundle(tmp_path / "bundle", config, model)
    assert out == tmp_path / "bundle"
    assert (out / CONFIG_FILE).is_file() and (out / WEIGHTS_FILE).is_file()

    loaded_config, loaded = load_bundle(out)
    assert loaded_config == config
    assert not loaded.training
    x = torch.rand(3, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert json.loads((out / CONFIG_FILE).read_text())["format_version"] == FORMAT_VERSION


def test_save_bundle_over_existing_keeps_extra_files_and_no_temp_folders(tmp_path: Path) -> None:
    parent = tmp_path / "runs"
    torch.manual_seed(4)
    first = create_model("seed-cnn")
    out = save_bundle(parent / "seed", _seed_config(threshold=0.2), first)
    (out / "training_curves.png").write_bytes(b"png-ish")
    (out / "notes").mkdir()
    (out / "notes" / "a.txt").write_text("kept")

    torch.manual_seed(5)
    second = create_model("seed-cnn").eval()
    save_bundle(parent / "seed", _seed_config(threshold=0.8), second)

    assert sorted(p.name for p in parent.iterdir()) == ["seed"]
    assert sorted(p.name for p in out.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE, "notes", "training_curves.png"])
    assert (out / "training_curves.png").read_bytes() == b"png-ish"
    assert (out / "notes" / "a.txt").read_text() == "kept"
    config, model = load_bundle(out)
    assert config.threshold == 0.8
    for k, v in second.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_save_bundle_folder_has_ordinary_permissions(tmp_path: Path) -> None:
    """The bundle folder is created like any other folder (umask), not private like a temp dir."""
    reference = tmp_path / "reference"
    reference.mkdir()
    expected = reference.stat().st_mode & 0o777
    out = save_bundle(tmp_path / "bundle", _seed_config(), create_model("seed-cnn"))
    assert out.stat().st_mode & 0o777 == expected
    save_bundle(out, _seed_config(), create_model("seed-cnn"))  # replacing keeps them too
    assert out.stat().st_mode & 0o777 == expected


@pytest.mark.parametrize("output", ["probability", "logit", "", "LOGIT_FAKE"])
def test_bundle_config_refuses_unknown_output(output: str) -> None:
    with pytest.raises(BundleError, match="output"):
        _seed_config(output=output)


@pytest.mark.parametrize("threshold", [-0.01, 1.5, float("nan")])
def test_bundle_config_refuses_threshold_outside_unit_interval(threshold: float) -> None:
    with pytest.raises(BundleError, match="threshold"):
        _seed_config(threshold=threshold)


def test_bundle_config_accepts_both_orientations_and_edges() -> None:
    logits = torch.tensor([[-2.0], [0.0], [3.0]])
    fake = _seed_config(output="logit_fake", threshold=0.0).p_fake_from_logits(logits)
    real = _seed_config(output="logit_real", threshold=1.0).p_fake_from_logits(logits)
    assert fake.shape == (3,)
    assert torch.allclose(fake, torch.sigmoid(logits.reshape(-1)))
    assert torch.allclose(fake + real, torch.ones(3))


def test_newer_format_version_is_refused_with_upgrade_hint(tmp_path: Path) -> None:
    out = save_bundle(tmp_path / "b", _seed_config(), create_model("seed-cnn"))
    raw = json.loads((out / CONFIG_FILE).read_text())
    raw["format_version"] = FORMAT_VERSION + 1
    (out / CONFIG_FILE).write_text(json.dumps(raw))
    for call in (read_config, load_bundle):
        with pytest.raises(BundleError) as info:
            call(out)
        message = str(info.value)
        assert "upgrade" in message
        assert str(out / CONFIG_FILE) in message
        assert str(FORMAT_VERSION + 1) in message


def test_config_dict_round_trip_ignores_unknown_keys() -> None:
    config = _seed_config(threshold=0.25, output="logit_real")
    d = config.to_dict()
    assert json.loads(json.dumps(d)) == d
    d["added_in_a_later_minor_version"] = {"x": 1}
    assert BundleConfig.from_dict(d) == config
    with pytest.raises(BundleError, match="preprocessing"):
        BundleConfig.from_dict({"arch": "seed-cnn"}, source="cfg.json")


# --------------------------------------------------------------------------- preprocessing


def test_preprocessing_shape_dtype_and_scaling() -> None:
    pre = Preprocessing(32)
    image = np.random.default_rng(0).integers(0, 256, size=(20, 45, 3), dtype=np.uint8)
    x = pre(image)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    assert x.flags["C_CONTIGUOUS"]
    assert 0.0 <= x.min() and x.max() <= 1.0
    same_size = np.random.default_rng(1).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(pre(same_size), same_size.transpose(2, 0, 1) / 255.0, rtol=0, atol=1e-6)


def test_preprocessing_applies_mean_and_std_per_channel() -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    pre = Preprocessing(16, mean, std, "bicubic")
    colour = np.array([200, 100, 30], np.uint8)
    image = np.broadcast_to(colour, (40, 24, 3)).copy()
    x = pre(image)
    assert x.shape == (3, 16, 16)
    for c in range(3):
        expected = (colour[c] / 255.0 - mean[c]) / std[c]
        np.testing.assert_allclose(x[c], expected, rtol=0, atol=1e-5)
    assert Preprocessing.from_dict(pre.to_dict()) == pre


def test_preprocessing_refuses_bad_settings() -> None:
    with pytest.raises(BundleError, match="interpolation"):
        Preprocessing(32, interpolation="lanczos9")
    with pytest.raises(BundleError, match="input_size"):
        Preprocessing(4)
    with pytest.raises(BundleError, match="preprocessing"):
        Preprocessing.from_dict({"mean": [0, 0, 0]})
