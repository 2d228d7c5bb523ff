"""Shared fixtures: small generated data sets and one trained bundle per test session.

The suite checks what CI's CPU machines do, so it hides any GPU, from its own process and
the ones it starts, before torch first looks for one: on a GPU, device "auto" would take
it, the runtime would be PyTorch rather than onnxruntime, and scores compared at CPU
tolerances would differ in their sixth decimal. ``benchmarks/gpu_check.py`` checks the GPU.
"""

from __future__ import annotations

import os

os.environ["CUDA_VISIBLE_DEVICES"] = ""

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from deepfake_detector.data.synthetic import make_synthetic_dataset  # noqa: E402


@pytest.fixture(scope="session")
def synthetic_train(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("train"), n_per_class=48, size=128, seed=0)


@pytest.fixture(scope="session")
def synthetic_test(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("test"), n_per_class=24, size=128, seed=1)


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory: pytest.TempPathFactory, synthetic_train: Path) -> Path:
    """A seed-cnn trained for a few epochs on the generated task (shared by many tests)."""
    from deepfake_detector.training import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "seed"
    return train(
        TrainConfig(data=str(synthetic_train), out=str(out), epochs=6, batch_size=16, workers=0), progress=False
    )


@pytest.fixture(scope="session")
def images(synthetic_test: Path) -> list[Path]:
    """Four real and four fake test images, interleaved."""
    real = sorted((synthetic_test / "real").rglob("*.png"))[:4]
    fake = sorted((synthetic_test / "fake").rglob("*.png"))[:4]
    return [p for pair in zip(real, fake) for p in pair]
