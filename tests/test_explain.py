"""Grad-CAM explanations: taken at the bundle's layer, alive to the input, in the right frames.

The known failure in the field is a heat map from the first layer, which only redraws edges:
so the maps here are checked against a Grad-CAM computed by hand at the named layer, and
against maps from other layers.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from doubles import FixedFaces
from PIL import Image

from deepfake_detector import Detector, Prediction
from deepfake_detector.cli import main
from deepfake_detector.data.synthetic import synthetic_image
from deepfake_detector.errors import InvalidArgumentError, UnknownLayerError
from deepfake_detector.explain import Explainer, Explanation, overlay, resolve_layer_name
from deepfake_detector.faces.base import FaceBox
from deepfake_detector.faces.crop import CropSpec, crop_box


def _scene(seed: int, size: int = 128, fake: bool = False) -> np.ndarray:
    return synthetic_image(np.random.default_rng(seed), size, fake=fake)


@pytest.fixture(scope="module")
def detector(trained_bundle: Path) -> Detector:
    return Detector.load(trained_bundle, device="cpu")


@pytest.fixture(scope="module")
def explainer(detector: Detector) -> Explainer:
    return Explainer.for_detector(detector)


def _hand_grad_cam(model: torch.nn.Module, layer: str, x: np.ndarray) -> np.ndarray:
    """Grad-CAM written out from the paper, to check the library's map against: the layer's
    activations weighted by their mean gradient of the fake logit, ReLU, bilinear up-sampling
    to the input, scaled to [0, 1]."""
    saved: dict[str, torch.Tensor] = {}
    module = model.get_submodule(layer)
    handle = module.register_forward_hook(lambda _m, _i, out: saved.__setitem__("a", out))
    try:
        with torch.enable_grad():
            inputs = torch.from_numpy(x[None]).requires_grad_(True)
            logit = model(inputs).reshape(-1)[0]
            (grads,) = torch.autograd.grad(logit, saved["a"])
    finally:
        handle.remove()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * saved["a"]).sum(dim=1, keepdim=True)).detach()
    cam = cam - cam.min()
    cam = cam / (cam.max() + 1e-7)
    up = torch.nn.functional.interpolate(cam, size=x.shape[1:], mode="bilinear", align_corners=False)
    up = up[0, 0].numpy()
    up = up - up.min()
    return up / (up.max() + 1e-7)


def test_the_layer_is_the_bundles(detector: Detector, explainer: Explainer) -> None:
    assert detector.config.explain_layer == "features.7"  # seed-cnn's last conv block, not its first layer
    assert explainer.layer_name == "features.7"
    assert explainer.layer is explainer.model.get_submodule("features.7")


def test_map_is_grad_cam_at_the_named_layer(detector: Detector, explainer: Explainer) -> None:
    image = _scene(3, fake=True)
    (heat,), _ = explainer.heat_maps([image])
    expected = _hand_grad_cam(detector.model, "features.7", detector.preprocessing(image))
    assert heat.shape == expected.shape == (128, 128)
    np.testing.assert_allclose(heat, expected, atol=2e-3)


def test_a_layer_named_in_the_config_is_the_one_used(detector: Detector, explainer: Explainer) -> None:
    image = _scene(4, fake=True)
    patched = Explainer(detector.model, replace(detector.config, explain_layer="features.4"))
    assert patched.layer_name == "features.4"
    (heat,), _ = patched.heat_maps([image])
    np.testing.assert_allclose(
        heat, _hand_grad_cam(detector.model, "features.4", detector.preprocessing(image)), atol=2e-3
    )
    (default,), _ = explainer.heat_maps([image])
    assert not np.allclose(heat, default, atol=0.05)


def test_first_layer_gives_another_map(detector: Detector, explainer: Explainer) -> None:
    image = _scene(5, fake=True)
    (first,), _ = Explainer.for_detector(detector, layer="features.0").heat_maps([image])
    (named,), _ = explainer.heat_maps([image])
    assert np.abs(first - named).mean() > 0.05


def test_an_ensemble_is_explained_through_one_member(detector: Detector) -> None:
    first = SimpleNamespace(model=detector.model, config=detector.config)
    second = SimpleNamespace(model=detector.model, config=replace(detector.config, explain_layer="features.4"))
    ensemble = SimpleNamespace(members=[first, second], model=None, config=None)
    assert Explainer.for_detector(ensemble).layer_name == "features.7"
    assert Explainer.for_detector(ensemble, member=1).layer_name == "features.4"


def test_registry_layer_when_the_bundle_names_none(detector: Detector) -> None:
    assert resolve_layer_name(replace(detector.config, explain_layer="")) == "features.7"


def test_map_changes_with_the_input(explainer: Explainer) -> None:
    maps, _ = explainer.heat_maps([_scene(10, fake=True), _scene(11, fake=False)])
    assert np.abs(maps[0] - maps[1]).mean() > 0.02


def test_whole_image_map_shapes_values_and_score(detector: Detector, explainer: Explainer) -> None:
    image = np.repeat(_scene(3, fake=True), 2, axis=1)[:, :230]  # not square, not the input size; still fake
    pred = detector.predict(image, keep_media=True)
    [(name, explanation)] = explainer.explain_prediction(pred)
    assert name == "image" and explanation.layer == "features.7"
    [heat] = explanation.heat_maps
    assert heat.name == "image" and heat.region == (0, 0, 230, 128)
    assert heat.crop.shape == (128, 230, 3)
    assert heat.crop_map.shape == (128, 230) and heat.crop_map.dtype == np.float32
    assert 0.0 <= heat.crop_map.min() and heat.crop_map.max() <= 1.0 and heat.crop_map.max() > 0.5
    np.testing.assert_array_equal(heat.image_map(), heat.crop_map)
    assert heat.p_fake == pytest.approx(pred.p_fake, abs=1e-5)
    assert explanation.overlay().size == (230, 128)
    assert heat.overlay().size == (230, 128)


def test_face_maps_follow_the_crops(trained_bundle: Path) -> None:
    boxes = [FaceBox(20, 30, 60, 60, 0.99), FaceBox(140, 40, 50, 70, 0.95), FaceBox(5, 150, 12, 12, 0.9)]
    detector = Detector.load(trained_bundle, device="cpu", face_detector=FixedFaces(boxes))
    image = np.concatenate([_scene(7, size=200, fake=True), _scene(8, size=200)], axis=1)[:180]
    pred = detector.predict(image, faces="only", keep_media=True)
    [(_, explanation)] = Explainer.for_detector(detector).explain_prediction(pred)
    assert [h.name for h in explanation.heat_maps] == ["face0", "face1"]  # the 12 px face is too small
    for heat, box, face in zip(explanation.heat_maps, boxes, pred.faces):
        x0, y0, x1, y1 = crop_box(box, image.shape, CropSpec())
        assert heat.region == (x0, y0, x1, y1)
        np.testing.assert_array_equal(heat.crop, image[y0:y1, x0:x1])
        assert heat.crop_map.shape == (y1 - y0, x1 - x0)
        assert heat.p_fake == pytest.approx(face.p_fake, abs=1e-5)
        assert heat.face is face
        full = heat.image_map()
        assert full.shape == image.shape[:2]
        np.testing.assert_array_equal(full[y0:y1, x0:x1], heat.crop_map)
        full[y0:y1, x0:x1] = 0
        assert not full.any()  # nothing outside the crop
    combined = explanation.image_map()
    assert combined.shape == image.shape[:2] and 0.0 <= combined.min() and combined.max() <= 1.0


def test_a_logit_of_real_is_explained_towards_fake(detector: Detector, explainer: Explainer) -> None:
    flipped = Explainer(
        _Negated(detector.model), replace(detector.config, output="logit_real"), layer="inner.features.7"
    )
    image = _scene(9, fake=True)
    (same,), p_same = flipped.heat_maps([image])
    (heat,), p = explainer.heat_maps([image])
    np.testing.assert_allclose(same, heat, atol=1e-5)
    np.testing.assert_allclose(p_same, p, atol=1e-6)


class _Negated(torch.nn.Module):
    """The same network with its logit pointing the other way (log-odds of real)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.inner(x)


def test_unknown_layer_is_a_typed_error(detector: Detector) -> None:
    with pytest.raises(UnknownLayerError, match=r"'features\.77'.*Did you mean 'features\.7'"):
        Explainer.for_detector(detector, layer="features.77")
    with pytest.raises(ValueError, match="classifier.9"):
        Explainer(detector.model, replace(detector.config, explain_layer="classifier.9"))


def test_explaining_needs_the_pixels(detector: Detector, explainer: Explainer) -> None:
    with pytest.raises(InvalidArgumentError, match="keep_media"):
        explainer.explain_prediction(detector.predict(_scene(1)))


def test_overlay_checks_shapes() -> None:
    image = np.zeros((20, 30, 3), np.uint8)
    assert overlay(image, np.ones((20, 30), np.float32)).size == (30, 20)
    with pytest.raises(InvalidArgumentError, match="does not fit"):
        overlay(image, np.ones((30, 20), np.float32))


def test_predict_explain_writes_one_overlay_per_image(
    capsys: pytest.CaptureFixture[str], trained_bundle: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, size in enumerate((96, 140)):
        Image.fromarray(_scene(20 + i, size=size, fake=i == 1)).save(inputs / f"img{i}.png")
    (inputs / "broken.png").write_bytes(b"not a picture")
    out = tmp_path / "explained"
    status = main(["predict", str(inputs), "--model", str(trained_bundle), "--explain", str(out), "--quiet"])
    assert status == 2  # the broken file failed; the others were explained
    written = sorted(out.iterdir())
    assert [p.name.split("-")[0] for p in written] == ["img0", "img1"]
    assert all(p.name.endswith("_image_gradcam.png") for p in written)
    assert sorted(Image.open(p).size for p in written) == [(96, 96), (140, 140)]
    assert "broken.png" in capsys.readouterr().err


def test_predict_explain_goes_on_past_a_failing_heat_map(
    capsys: pytest.CaptureFixture[str], trained_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(2):
        Image.fromarray(_scene(30 + i, size=96)).save(inputs / f"img{i}.png")
    explain_prediction = Explainer.explain_prediction

    def fails_on_img0(self: Explainer, prediction: Prediction) -> list[tuple[str, Explanation]]:
        if Path(prediction.path or "").name == "img0.png":
            raise RuntimeError("out of memory")
        return explain_prediction(self, prediction)

    monkeypatch.setattr(Explainer, "explain_prediction", fails_on_img0)
    out = tmp_path / "explained"
    argv = ["predict", str(inputs), "--model", str(trained_bundle), "--explain", str(out), "--format", "jsonl"]
    assert main(argv) == 2  # a partial failure, as for a file that fails to score
    assert [p.name.split("-")[0] for p in out.iterdir()] == ["img1"]  # the next file was still explained
    captured = capsys.readouterr()
    assert [json.loads(line)["error"] for line in captured.out.splitlines()] == [None, None]  # both verdicts stand
    assert "img0.png: no Grad-CAM heat map (RuntimeError: out of memory)" in captured.err
    assert "1 without heat maps: see above" in captured.err
