"""Importing the prototype's Keras ``.h5`` model: same predictions, orientation flipped to P(fake)."""

from __future__ import annotations

import json
import os
import warnings

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported; TensorFlow is not needed

import h5py
import numpy as np
import pytest
import torch

keras = pytest.importorskip("keras")

from deepfake_detector.bundle import load_bundle  # noqa: E402
from deepfake_detector.errors import ModelImportError  # noqa: E402
from deepfake_detector.keras_import import import_keras_h5  # noqa: E402


def _prototype(first_filters: int = 32) -> keras.Model:
    """The prototype network exactly as it was written (``input_shape`` on the first layer)."""
    from keras import layers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Keras 3 prefers keras.Input over input_shape
        return keras.Sequential(
            [
                layers.Conv2D(first_filters, (3, 3), activation="relu", input_shape=(128, 128, 3)),
                layers.MaxPooling2D(2, 2),
                layers.Conv2D(64, (3, 3), activation="relu"),
                layers.MaxPooling2D(2, 2),
                layers.Conv2D(128, (3, 3), activation="relu"),
                layers.MaxPooling2D(2, 2),
                layers.Flatten(),
                layers.Dense(128, activation="relu"),
                layers.Dropout(0.5),
                layers.Dense(1, activation="sigmoid"),
            ]
        )


@pytest.fixture(scope="module")
def prototype(tmp_path_factory):
    """A Keras 3 ``.h5`` of the prototype with random non-trivial weights, images, and Keras' P(real)."""
    keras.utils.set_random_seed(0)
    model = _prototype()
    rng = np.random.default_rng(1234)
    # Every tensor (biases too) random and non-zero, small enough that outputs are not saturated;
    # the last layer a little larger so that P(real) spreads well away from 0.5.
    weights = model.get_weights()
    scales = [0.05] * (len(weights) - 2) + [0.5, 0.05]
    model.set_weights([rng.normal(0.0, s, w.shape).astype(np.float32) for w, s in zip(weights, scales)])
    path = tmp_path_factory.mktemp("keras") / "prototype.h5"
    model.save(str(path))
    images = rng.integers(0, 256, size=(8, 128, 128, 3), dtype=np.uint8)
    p_real = keras.ops.convert_to_numpy(model(images.astype(np.float32) / 255.0, training=False)).reshape(-1)
    # The test is only meaningful if the outputs vary and are away from 0 and 1.
    assert np.all((p_real > 0.02) & (p_real < 0.98)), p_real
    assert np.ptp(p_real) > 0.05, p_real
    return path, images, p_real


def _bundle_p_fake(bundle, images) -> np.ndarray:
    config, model = load_bundle(bundle)
    x = torch.from_numpy(np.stack([config.preprocessing(img) for img in images]))
    with torch.no_grad():
        return config.p_fake_from_logits(model(x)).numpy()


def test_keras3_h5_matches_keras_predictions(prototype, tmp_path):
    path, images, p_real = prototype
    bundle = import_keras_h5(path, tmp_path / "bundle", threshold=0.4)
    assert bundle == tmp_path / "bundle"
    config, _ = load_bundle(bundle)
    assert config.arch == "seed-cnn"
    assert config.output == "logit_real"
    assert config.labels == ["real", "fake"]
    assert config.threshold == pytest.approx(0.4)
    assert config.name == "prototype"
    assert config.explain_layer == "features.7"
    assert config.preprocessing.input_size == 128
    assert tuple(config.preprocessing.mean) == (0.0, 0.0, 0.0)
    assert tuple(config.preprocessing.std) == (1.0, 1.0, 1.0)
    assert config.preprocessing.interpolation == "nearest"  # Keras' load_img default
    assert config.training["resize"] == "nearest, as Keras' load_img"
    assert config.training["imported_from"] == "prototype.h5"
    assert config.training["source"] == "keras-h5"

    p_fake = _bundle_p_fake(bundle, images)
    np.testing.assert_allclose(1.0 - p_fake, p_real, rtol=0, atol=1e-5)


def _to_keras2_layout(src, dst) -> None:
    """Rewrite a Keras 3 ``.h5`` the way Keras 2 / tf.keras wrote it.

    Bytes attributes, ``batch_input_shape`` on the first layer and no InputLayer, layer
    names with Keras 2.0-style suffixes, and weights stored as ``<layer>/<layer>/kernel:0``.
    """
    renames = {
        "conv2d": "conv2d_1", "conv2d_1": "conv2d_2", "conv2d_2": "conv2d_3",
        "max_pooling2d": "max_pooling2d_1", "max_pooling2d_1": "max_pooling2d_2",
        "max_pooling2d_2": "max_pooling2d_3", "flatten": "flatten_1",
        "dense": "dense_1", "dense_1": "dense_2", "dropout": "dropout_1",
    }  # fmt: skip
    with h5py.File(src, "r") as fin, h5py.File(dst, "w") as fout:
        cfg = json.loads(fin.attrs["model_config"])
        layers = []
        for layer in cfg["config"]["layers"]:
            if layer["class_name"] == "InputLayer":
                continue
            conf = dict(layer["config"], name=renames[layer["config"]["name"]], dtype="float32")
            if not layers:
                conf["batch_input_shape"] = [None, 128, 128, 3]
            layers.append({"class_name": layer["class_name"], "config": conf})
        keras2 = {"class_name": "Sequential", "config": {"name": "sequential_1", "layers": layers}}
        fout.attrs["model_config"] = json.dumps(keras2).encode("utf-8")
        fout.attrs["keras_version"] = b"2.2.4"
        fout.attrs["backend"] = b"tensorflow"
        root = fout.create_group("model_weights")
        names = [renames[n] for n in fin["model_weights"].attrs["layer_names"]]
        root.attrs["layer_names"] = np.array([n.encode() for n in names], dtype="S")
        for old, new in renames.items():
            gin, gout = fin["model_weights"][old], root.create_group(new)
            wnames = []
            for wname in gin.attrs["weight_names"]:
                role = str(wname).rsplit("/", 1)[-1]
                wnames.append(f"{new}/{role}:0")
                gout.create_dataset(wnames[-1], data=gin[wname][()])
            gout.attrs["weight_names"] = np.array([w.encode() for w in wnames], dtype="S")


def test_keras2_h5_layout_matches(prototype, tmp_path):
    path, images, p_real = prototype
    old = tmp_path / "old_keras.h5"
    _to_keras2_layout(path, old)
    bundle = import_keras_h5(old, tmp_path / "bundle", name="legacy")
    config, _ = load_bundle(bundle)
    assert config.name == "legacy"
    assert config.training["imported_from"] == "old_keras.h5"
    np.testing.assert_allclose(1.0 - _bundle_p_fake(bundle, images), p_real, rtol=0, atol=1e-5)


def test_wrong_architecture_is_refused(tmp_path):
    keras.utils.set_random_seed(0)
    path = tmp_path / "narrow.h5"
    _prototype(first_filters=16).save(str(path))
    with pytest.raises(ModelImportError, match="16 filters") as err:
        import_keras_h5(path, tmp_path / "bundle")
    assert "narrow.h5" in str(err.value)
    assert not (tmp_path / "bundle").exists()


def test_not_hdf5_is_refused(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("this is not an HDF5 file\n")
    with pytest.raises(ModelImportError, match="not an HDF5 file") as err:
        import_keras_h5(path, tmp_path / "bundle")
    assert "notes.h5" in str(err.value)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ModelImportError, match="not found") as err:
        import_keras_h5(tmp_path / "absent.h5", tmp_path / "bundle")
    assert "absent.h5" in str(err.value)


def test_file_without_model_config_is_refused(tmp_path):
    path = tmp_path / "weights_only.h5"
    with h5py.File(path, "w") as f:
        f.create_group("conv2d").create_dataset("kernel", data=np.zeros((3, 3, 3, 32), np.float32))
    with pytest.raises(ModelImportError, match="model_config") as err:
        import_keras_h5(path, tmp_path / "bundle")
    assert "weights_only.h5" in str(err.value)


def test_missing_weights_are_refused(prototype, tmp_path):
    path, _, _ = prototype
    broken = tmp_path / "broken.h5"
    broken.write_bytes(path.read_bytes())
    with h5py.File(broken, "a") as f:
        del f["model_weights/dense_1"]
    with pytest.raises(ModelImportError, match="dense_1") as err:
        import_keras_h5(broken, tmp_path / "bundle")
    assert "broken.h5" in str(err.value)


def _keras_p_real(model, image_path, interpolation: str = "nearest") -> float:
    """P(real) through Keras' own loading pipeline, as the prototype was trained and used."""
    img = keras.utils.load_img(str(image_path), target_size=(128, 128), interpolation=interpolation)
    x = keras.utils.img_to_array(img)[None] / 255.0
    return float(np.asarray(model.predict(x, verbose=0)).reshape(-1)[0])


def test_resized_input_matches_keras_load_img(prototype, tmp_path):
    from PIL import Image

    from deepfake_detector import Detector

    path, _, _ = prototype
    # A 200x160 (W x H) image with gradients, blocks and noise: the resize to 128x128 matters.
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:160, 0:200]
    img = np.stack([xx * 255 // 199, yy * 255 // 159, ((xx // 16 + yy // 16) % 2) * 200], axis=-1)
    img = np.clip(img + rng.integers(-40, 41, size=img.shape), 0, 255).astype(np.uint8)
    image_path = tmp_path / "photo.png"
    Image.fromarray(img, "RGB").save(image_path)

    model = keras.models.load_model(str(path), compile=False)
    p_real = _keras_p_real(model, image_path)
    # Only meaningful if the interpolation changes the answer.
    assert abs(_keras_p_real(model, image_path, "bilinear") - p_real) > 1e-4

    bundle = import_keras_h5(path, tmp_path / "bundle")
    pred = Detector.load(bundle, device="cpu").predict(image_path)
    assert pred.p_fake == pytest.approx(1.0 - p_real, rel=0, abs=1e-5)


def test_keras_archive_is_refused_with_a_hint(tmp_path):
    keras.utils.set_random_seed(0)
    path = tmp_path / "model.keras"
    _prototype().save(str(path))
    with pytest.raises(ModelImportError, match="not an HDF5 file") as err:
        import_keras_h5(path, tmp_path / "bundle")
    message = str(err.value)
    assert "model.keras" in message
    assert "zip archive" in message and "'.keras' file" in message
    assert "model.save('model.h5')" in message
    assert not (tmp_path / "bundle").exists()


def test_cli_import_keras(prototype, tmp_path, capsys):
    from deepfake_detector.cli import main

    path, _, _ = prototype
    out = tmp_path / "b"
    assert main(["import-keras", str(path), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    config, _ = load_bundle(out)
    assert config.arch == "seed-cnn"
    assert config.preprocessing.interpolation == "nearest"

    text = tmp_path / "notes.txt"
    text.write_text("not a model\n")
    assert main(["import-keras", str(text), "--out", str(tmp_path / "c")]) == 1
    captured = capsys.readouterr()
    assert "notes.txt" in captured.err
    assert "not an HDF5 file" in captured.err
    assert captured.out == ""
    assert not (tmp_path / "c").exists()
