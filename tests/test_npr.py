"""npr-resnet: the neighbouring-pixel residual and the small ResNet that reads it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from deepfake_detector.bundle import BundleConfig, load_bundle, save_bundle
from deepfake_detector.errors import InvalidArgumentError
from deepfake_detector.models import count_parameters, create_model, get_spec, list_models
from deepfake_detector.models.npr import NPRResNet, neighbour_residual
from deepfake_detector.preprocess import Preprocessing

NAME = "npr-resnet"


def _upsampled(low: torch.Tensor) -> torch.Tensor:
    """Each pixel repeated into a 2x2 block: what a generator's nearest up-sampling leaves."""
    return low.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


def _with_random_batchnorm(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial affine weights and running statistics, so no zero-initialised
    layer can make two inputs agree by accident."""
    generator = torch.Generator().manual_seed(7)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.weight.data = 0.5 + torch.rand(n, generator=generator)
            module.bias.data = torch.randn(n, generator=generator) * 0.1
            module.running_mean = torch.randn(n, generator=generator) * 0.1
            module.running_var = 0.5 + torch.rand(n, generator=generator)
    return model.eval()


def test_registered_with_its_preprocessing_and_recipe() -> None:
    assert NAME in list_models()
    assert list_models("npr*") == [NAME]
    spec = get_spec(NAME)
    assert spec.input_size == 224
    assert spec.explain_layer == "stage3"
    assert spec.description
    assert spec.recipe["optimizer"] == "adamw" and spec.recipe["lr"] == pytest.approx(1e-3)
    assert spec.recipe["augment"] == "default"


def test_parameter_count_is_small() -> None:
    count = count_parameters(NAME)
    assert count == 1_577_505
    assert count == sum(p.numel() for p in create_model(NAME).parameters())


def test_maps_a_batch_to_one_float_logit_each() -> None:
    torch.manual_seed(0)
    model = create_model(NAME).eval()
    with torch.no_grad():
        y = model(torch.rand(3, 3, 224, 224))
        odd = model(torch.rand(1, 3, 97, 130))  # odd sizes: the last 2x2 block is cut, nothing breaks
    assert y.shape == (3, 1) and y.dtype == torch.float32
    assert torch.isfinite(y).all()
    assert odd.shape == (1, 1)


def test_residual_is_zero_on_upsampled_images_and_not_on_others() -> None:
    generator = torch.Generator().manual_seed(1)
    low = torch.rand(2, 3, 40, 37, generator=generator)
    up = _upsampled(low)
    assert torch.equal(neighbour_residual(up), torch.zeros_like(up))
    # cut to odd sizes, it is still zero: blocks are counted from the top-left corner
    assert torch.equal(neighbour_residual(up[..., :79, :73]), torch.zeros(2, 3, 79, 73))

    x = torch.rand(2, 3, 9, 8, generator=generator)
    r = neighbour_residual(x)
    assert r.abs().sum() > 0
    # by definition: 0 on each block's top-left pixel, the difference to that pixel elsewhere
    corner = _upsampled(x[..., ::2, ::2])[..., :9, :8]
    assert torch.equal(r, x - corner)
    assert torch.equal(r[..., ::2, ::2], torch.zeros_like(r[..., ::2, ::2]))


def test_upsampled_images_all_get_the_same_logit() -> None:
    torch.manual_seed(2)
    model = _with_random_batchnorm(create_model(NAME))
    generator = torch.Generator().manual_seed(3)
    first = _upsampled(torch.rand(1, 3, 112, 112, generator=generator))
    second = _upsampled(torch.rand(1, 3, 112, 112, generator=generator) * 0.3 + 0.5)
    generic = torch.rand(1, 3, 224, 224, generator=generator)
    with torch.no_grad():
        a, b, c = model(first), model(second), model(generic)
    assert torch.equal(a, b), "content of an up-sampled image must not reach the logit"
    assert not torch.allclose(a, c, atol=1e-4)


def test_a_constant_brightness_shift_does_not_change_the_logit() -> None:
    """Why the entry needs no mean: the residual cancels any offset per channel."""
    torch.manual_seed(4)
    model = _with_random_batchnorm(create_model(NAME))
    x = torch.rand(2, 3, 64, 64) * 0.5
    shift = torch.tensor([0.1, -0.2, 0.3]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), model(x + shift), atol=1e-4)


def test_explain_layer_is_the_last_stage_feeding_the_pool() -> None:
    model = create_model(NAME).eval()
    modules = dict(model.named_modules())
    layer = modules[get_spec(NAME).explain_layer]
    seen: list[torch.Size] = []
    layer.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    with torch.no_grad():
        model(torch.rand(2, 3, 224, 224))
    assert seen == [torch.Size([2, 256, 14, 14])]  # a spatial map Grad-CAM can weigh
    assert model.head.in_features == 256


def test_gradients_reach_the_stem() -> None:
    torch.manual_seed(5)
    model = create_model(NAME).train()
    x = torch.rand(4, 3, 64, 64)
    loss = nn.functional.binary_cross_entropy_with_logits(model(x), torch.tensor([[0.0], [1.0], [0.0], [1.0]]))
    loss.backward()
    stem = model.stem[0].weight.grad
    assert stem is not None and torch.isfinite(stem).all() and stem.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


def test_learns_to_tell_upsampled_images_from_camera_like_ones() -> None:
    """A few optimiser steps separate nearest-upsampled images from ones without that trace."""
    torch.manual_seed(6)
    model = create_model(NAME, widths=(8, 16), depths=(1, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(8)

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        fakes = _upsampled(torch.rand(n, 3, 16, 16, generator=generator))
        reals = torch.rand(n, 3, 32, 32, generator=generator)
        return torch.cat([reals, fakes]), torch.cat([torch.zeros(n, 1), torch.ones(n, 1)])

    model.train()
    for _ in range(15):
        x, y = batch(8)
        optimizer.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
        optimizer.step()
    model.eval()
    x, y = batch(16)
    with torch.no_grad():
        predicted = (model(x) > 0).float()
    assert torch.equal(predicted, y)


def test_bundle_round_trip_keeps_kwargs_and_outputs(tmp_path: Path) -> None:
    spec = get_spec(NAME)
    kwargs = {"widths": [16, 32], "depths": [1, 2], "residual_scale": 5.0}
    torch.manual_seed(9)
    model = _with_random_batchnorm(create_model(NAME, **kwargs))
    config = BundleConfig(
        arch=NAME,
        arch_kwargs=kwargs,
        preprocessing=Preprocessing(spec.input_size, spec.mean, spec.std),
        explain_layer="stage2",
    )
    loaded_config, loaded = load_bundle(save_bundle(tmp_path / "npr", config, model))
    assert loaded_config == config
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_refuses_pretrained_and_inconsistent_stages() -> None:
    with pytest.raises(InvalidArgumentError, match="pretrained"):
        create_model(NAME, pretrained=True)
    with pytest.raises(InvalidArgumentError, match="widths"):
        NPRResNet(widths=(64, 128), depths=(1,))
    with pytest.raises(InvalidArgumentError, match="depths"):
        NPRResNet(depths=(1, 0, 1))
