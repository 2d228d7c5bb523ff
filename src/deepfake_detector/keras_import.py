"""Import the prototype's Keras ``.h5`` model as a ``seed-cnn`` bundle, with h5py only.

The prototype was a Keras ``Sequential`` CNN (see :mod:`deepfake_detector.models.seed_cnn`)
saved in the legacy HDF5 format. Neither TensorFlow nor Keras is needed to read it: the
file's ``model_config`` attribute (JSON) gives the layers in order with their settings, and
``model_weights/<layer>`` groups hold the tensors, listed in order by their ``weight_names``
attribute. Two dialects exist:

* Keras 2 / ``tf.keras``: attributes are often ``bytes``; weight names look like
  ``conv2d/kernel:0`` and live at ``model_weights/conv2d/conv2d/kernel:0``; the input
  shape is ``batch_input_shape`` (on an ``InputLayer`` or on the first layer). Very old
  files (Keras 2.0-2.2) store ``config`` as a bare list of layers.
* Keras 3 (``model.save("x.h5")``): attributes are ``str``; weight names look like
  ``sequential/conv2d/kernel`` and live at ``model_weights/conv2d/sequential/conv2d/kernel``;
  the config starts with an ``InputLayer`` whose ``batch_shape`` is the input shape, and
  pooling/flatten/dropout layers have an empty ``weight_names``.

Both are read the same way: each dataset is found by the name listed in ``weight_names``
relative to its layer group. Weight layouts are converted to PyTorch's: conv kernels
``(kh, kw, in, out) -> (out, in, kh, kw)``; dense kernels are transposed; and the rows of
the first dense kernel are reordered from Keras' channels-last flatten order ``(H, W, C)``
to PyTorch's ``(C, H, W)``.

The prototype was trained with ``flow_from_directory`` on folders ``fake/`` and ``real/``
(alphabetical: fake = 0, real = 1), so its sigmoid output is P(real). The bundle therefore
records ``output="logit_real"``: the final Dense layer's pre-sigmoid value is the log-odds
of real, and :meth:`BundleConfig.p_fake_from_logits` turns it into P(fake). Its images were
loaded with ``load_img``, whose default resize is nearest-neighbour, so the bundle's
preprocessing resizes with ``interpolation="nearest"`` too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidArgumentError, ModelImportError

__all__ = ["import_keras_h5"]

_ARCH = "seed-cnn"
_INPUT_SHAPE = (128, 128, 3)
_CONV_FILTERS = (32, 64, 128)
_DENSE_UNITS = (128, 1)
# Layers that carry no weights and do nothing at inference; skipped when matching.
_SKIPPED = {"InputLayer", "Dropout"}
_CONV = {"Conv2D", "Convolution2D"}
_POOL = {"MaxPooling2D", "MaxPool2D"}
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def import_keras_h5(
    h5_path: str | Path,
    out_dir: str | Path,
    *,
    threshold: float = 0.5,
    name: str | None = None,
) -> Path:
    """Convert the prototype's Keras ``.h5`` file into a ``seed-cnn`` bundle at ``out_dir``.

    The file is checked against the prototype's architecture (three 3x3 ``Conv2D`` layers
    with 32/64/128 filters and ReLU, each followed by 2x2 max-pooling, ``Flatten``,
    ``Dense(128, relu)``, optional ``Dropout``, ``Dense(1, sigmoid)``, input 128x128x3,
    channels-last). Returns the bundle folder. Every problem with the file raises
    :class:`~deepfake_detector.errors.ModelImportError` naming the file and the reason.
    """
    import torch

    from .bundle import BundleConfig, save_bundle
    from .models import create_model, get_spec
    from .preprocess import Preprocessing

    path = Path(h5_path)
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"threshold must be a number in [0, 1]; got {threshold!r}.") from None
    if not 0.0 <= threshold <= 1.0:
        raise InvalidArgumentError(f"threshold must lie in [0, 1]; got {threshold!r}.")

    layers, weights = _read_h5(path)
    try:
        convs, dense = _check_architecture(path, layers)
    except ModelImportError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise ModelImportError(f"{path}: malformed layer settings in 'model_config' ({exc!r}).") from exc

    model = create_model(_ARCH)
    side = int(model.feature_side)
    state = _map_weights(path, convs, dense, weights, side)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:  # guards the mapping itself; the checks above should make this unreachable
        raise ModelImportError(f"{path}: weights do not fit {_ARCH} (expected {expected}, got {got}).")
    try:
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    except RuntimeError as exc:
        raise ModelImportError(f"{path}: weights do not fit {_ARCH} ({exc}).") from exc
    model.eval()

    config = BundleConfig(
        arch=_ARCH,
        # Keras' load_img / flow_from_directory resize with "nearest" by default.
        preprocessing=Preprocessing(input_size=_INPUT_SHAPE[0], interpolation="nearest"),
        output="logit_real",
        labels=["real", "fake"],
        threshold=threshold,
        explain_layer=get_spec(_ARCH).explain_layer,
        name=name or path.stem,
        training={
            "imported_from": path.name,
            "source": "keras-h5",
            "note": "the prototype's sigmoid output is P(real)",
            "resize": "nearest, as Keras' load_img",
        },
    )
    try:
        return save_bundle(out_dir, config, model)
    except OSError as exc:
        raise ModelImportError(f"{path}: cannot write the bundle to {out_dir} ({exc}).") from exc


# --------------------------------------------------------------------------- reading


def _text(value: Any) -> str:
    """An HDF5 string attribute as ``str`` (h5py returns ``bytes`` for Keras 2 files)."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8")
    return str(value)


def _names_attr(group: Any, attr: str) -> list[str] | None:
    """A list-of-strings attribute, also when Keras split it into ``attr0``, ``attr1``, ..."""
    if attr in group.attrs:
        chunks = [group.attrs[attr]]
    elif f"{attr}0" in group.attrs:
        chunks, i = [], 0
        while f"{attr}{i}" in group.attrs:
            chunks.append(group.attrs[f"{attr}{i}"])
            i += 1
    else:
        return None
    names: list[str] = []
    for chunk in chunks:
        names.extend(_text(v) for v in np.asarray(chunk).reshape(-1))
    return names


def _read_h5(path: Path) -> tuple[list[dict[str, Any]], dict[str, list[tuple[str, np.ndarray]]]]:
    """The layer configs in order, and each weighted layer's ``(weight name, array)`` list."""
    import h5py

    if not path.exists():
        raise ModelImportError(f"{path}: file not found.")
    if not path.is_file():
        raise ModelImportError(f"{path}: not a file.")
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise ModelImportError(f"{path}: cannot read the file ({exc}).") from exc
    if head != _HDF5_MAGIC and not h5py.is_hdf5(str(path)):
        hint = ""
        if head.startswith(b"PK"):
            hint = (
                " It looks like a zip archive (a Keras 3 '.keras' file?); "
                "re-save the model with model.save('model.h5')."
            )
        raise ModelImportError(f"{path}: not an HDF5 file.{hint}")

    try:
        with h5py.File(path, "r") as f:
            if "model_config" not in f.attrs:
                raise ModelImportError(
                    f"{path}: no 'model_config' attribute; this is not a whole Keras model saved with "
                    "model.save() (a weights-only file from save_weights() lacks the architecture)."
                )
            try:
                model_config = json.loads(_text(f.attrs["model_config"]))
            except (ValueError, UnicodeDecodeError) as exc:
                raise ModelImportError(f"{path}: 'model_config' is not valid JSON ({exc}).") from exc
            layers = _layer_list(path, model_config)

            if "model_weights" not in f:
                raise ModelImportError(f"{path}: no 'model_weights' group; the file holds no weights.")
            root = f["model_weights"]
            weights: dict[str, list[tuple[str, np.ndarray]]] = {}
            for layer in layers:
                lname = layer["name"]
                if not isinstance(lname, str) or lname not in root:
                    weights[lname] = []
                    continue
                group = root[lname]
                names = _names_attr(group, "weight_names") or []
                tensors = []
                for wname in names:
                    if wname not in group:
                        raise ModelImportError(
                            f"{path}: weight {wname!r} of layer {lname!r} is listed but missing from the file."
                        )
                    tensors.append((wname, np.asarray(group[wname][()], dtype=np.float32)))
                weights[lname] = tensors
    except ModelImportError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ModelImportError(f"{path}: unreadable HDF5 model file ({exc}).") from exc
    return layers, weights


def _layer_list(path: Path, model_config: Any) -> list[dict[str, Any]]:
    """``[{"class_name", "name", "config"}, ...]`` in model order, from ``model_config``."""
    if not isinstance(model_config, dict):
        raise ModelImportError(f"{path}: 'model_config' is not a JSON object.")
    cls = model_config.get("class_name")
    cfg = model_config.get("config")
    if cls not in ("Sequential", "Functional", "Model"):
        raise ModelImportError(f"{path}: expected a Keras Sequential model, found {cls!r}.")
    raw = cfg if isinstance(cfg, list) else (cfg or {}).get("layers")  # Keras <= 2.2: a bare list
    if not isinstance(raw, list) or not raw:
        raise ModelImportError(f"{path}: 'model_config' lists no layers.")
    layers = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("config"), dict):
            raise ModelImportError(f"{path}: malformed layer entry in 'model_config': {item!r:.200}.")
        conf = item["config"]
        name = conf.get("name") or item.get("name")
        layers.append({"class_name": item.get("class_name"), "name": name, "config": conf})
    if isinstance(cfg, dict) and cfg.get("build_input_shape") is not None:
        # Keras 3 records the shape the model was built with; checked like an InputLayer's.
        build = {"batch_shape": cfg["build_input_shape"]}
        layers.insert(0, {"class_name": "_BuildShape", "name": None, "config": build})
    return layers


# --------------------------------------------------------------------------- checking


def _activation(conf: dict[str, Any]) -> str:
    act = conf.get("activation", "linear")
    if isinstance(act, dict):  # a serialised activation object
        inner = act.get("config")
        act = inner.get("name") if isinstance(inner, dict) and inner.get("name") else act.get("class_name")
    return str(act).lower() if act is not None else "linear"


def _pair(value: Any, default: Any = None) -> tuple[int, ...] | None:
    if value is None:
        value = default
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return (int(value), int(value))
    return tuple(int(v) for v in value)


def _check_architecture(path: Path, layers: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Compare the layers with the prototype; returns the conv and dense layer entries."""
    problems: list[str] = []

    # Input shape, wherever this dialect put it (InputLayer, first layer, build_input_shape).
    shapes = []
    for layer in layers:
        for key in ("batch_shape", "batch_input_shape"):
            shape = layer["config"].get(key)
            if isinstance(shape, (list, tuple)) and tuple(shape[1:]) not in shapes:
                shapes.append(tuple(shape[1:]))
    for dims in shapes:
        if dims != _INPUT_SHAPE:
            problems.append(f"input shape is {dims}, expected {_INPUT_SHAPE}")

    kept = [layer for layer in layers if layer["class_name"] not in _SKIPPED and layer["class_name"] != "_BuildShape"]
    expected = ["Conv2D", "MaxPooling2D"] * 3 + ["Flatten", "Dense", "Dense"]
    found = [layer["class_name"] for layer in kept]
    norm = ["Conv2D" if c in _CONV else "MaxPooling2D" if c in _POOL else c for c in found]
    if norm != expected:
        raise ModelImportError(
            f"{path}: architecture differs from the prototype (seed-cnn): layers are {found}, "
            f"expected {expected} (InputLayer and Dropout ignored)."
        )

    convs = [layer for layer in kept if layer["class_name"] in _CONV]
    pools = [layer for layer in kept if layer["class_name"] in _POOL]
    dense = [layer for layer in kept if layer["class_name"] == "Dense"]
    for i, (layer, filters) in enumerate(zip(convs, _CONV_FILTERS), 1):
        c, tag = layer["config"], f"Conv2D #{i} ({layer['name']})"
        if int(c.get("filters", -1)) != filters:
            problems.append(f"{tag} has {c.get('filters')} filters, expected {filters}")
        if _pair(c.get("kernel_size")) != (3, 3):
            problems.append(f"{tag} kernel size is {c.get('kernel_size')}, expected (3, 3)")
        if _pair(c.get("strides"), 1) != (1, 1):
            problems.append(f"{tag} strides are {c.get('strides')}, expected (1, 1)")
        if _pair(c.get("dilation_rate"), 1) != (1, 1):
            problems.append(f"{tag} dilation is {c.get('dilation_rate')}, expected (1, 1)")
        if str(c.get("padding", "valid")).lower() != "valid":
            problems.append(f"{tag} padding is {c.get('padding')!r}, expected 'valid'")
        if int(c.get("groups", 1) or 1) != 1:
            problems.append(f"{tag} uses {c.get('groups')} groups, expected 1")
        if c.get("use_bias", True) is not True:
            problems.append(f"{tag} has no bias")
        if _activation(c) != "relu":
            problems.append(f"{tag} activation is {_activation(c)!r}, expected 'relu'")
    for layer in convs + pools:
        df = layer["config"].get("data_format") or "channels_last"
        if df != "channels_last":
            problems.append(f"{layer['class_name']} ({layer['name']}) data format is {df!r}, expected 'channels_last'")
    for i, layer in enumerate(pools, 1):
        c, tag = layer["config"], f"MaxPooling2D #{i} ({layer['name']})"
        pool = _pair(c.get("pool_size"), 2)
        if pool != (2, 2) or _pair(c.get("strides"), pool) != (2, 2):
            problems.append(f"{tag} pool/strides are {c.get('pool_size')}/{c.get('strides')}, expected (2, 2)/(2, 2)")
        if str(c.get("padding", "valid")).lower() != "valid":
            problems.append(f"{tag} padding is {c.get('padding')!r}, expected 'valid'")
    for i, (layer, units, act) in enumerate(zip(dense, _DENSE_UNITS, ("relu", "sigmoid")), 1):
        c, tag = layer["config"], f"Dense #{i} ({layer['name']})"
        if int(c.get("units", -1)) != units:
            problems.append(f"{tag} has {c.get('units')} units, expected {units}")
        if c.get("use_bias", True) is not True:
            problems.append(f"{tag} has no bias")
        if _activation(c) != act:
            problems.append(f"{tag} activation is {_activation(c)!r}, expected {act!r}")
    if problems:
        raise ModelImportError(
            f"{path}: architecture differs from the prototype (seed-cnn): " + "; ".join(problems) + "."
        )
    return convs, dense


# --------------------------------------------------------------------------- mapping


def _kernel_bias(
    path: Path, layer: dict[str, Any], tensors: list[tuple[str, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """A layer's kernel and bias, by name (``.../kernel[:0]``, ``.../bias[:0]``) or else by order."""
    lname = layer["name"]
    if not tensors:
        raise ModelImportError(f"{path}: no weights stored for layer {lname!r}.")
    by_role: dict[str, np.ndarray] = {}
    for wname, value in tensors:
        role = wname.rsplit("/", 1)[-1].split(":", 1)[0]
        by_role[role] = value
    if "kernel" in by_role and "bias" in by_role and len(tensors) == 2:
        return by_role["kernel"], by_role["bias"]
    if len(tensors) == 2:
        return tensors[0][1], tensors[1][1]
    raise ModelImportError(
        f"{path}: layer {lname!r} has weights {[n for n, _ in tensors]}, expected a kernel and a bias."
    )


def _map_weights(
    path: Path,
    convs: list[dict[str, Any]],
    dense: list[dict[str, Any]],
    weights: dict[str, list[tuple[str, np.ndarray]]],
    side: int,
) -> dict[str, np.ndarray]:
    """The seed-cnn state dict (numpy float32) from the Keras tensors."""
    state: dict[str, np.ndarray] = {}
    in_ch = 3
    for idx, layer, filters in zip((0, 3, 6), convs, _CONV_FILTERS):
        kernel, bias = _kernel_bias(path, layer, weights.get(layer["name"], []))
        if kernel.shape != (3, 3, in_ch, filters) or bias.shape != (filters,):
            raise ModelImportError(
                f"{path}: layer {layer['name']!r} weights have shapes {kernel.shape}/{bias.shape}, "
                f"expected {(3, 3, in_ch, filters)}/{(filters,)}."
            )
        state[f"features.{idx}.weight"] = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))
        state[f"features.{idx}.bias"] = np.ascontiguousarray(bias)
        in_ch = filters

    flat = _CONV_FILTERS[-1] * side * side
    k1, b1 = _kernel_bias(path, dense[0], weights.get(dense[0]["name"], []))
    if k1.shape != (flat, _DENSE_UNITS[0]) or b1.shape != (_DENSE_UNITS[0],):
        raise ModelImportError(
            f"{path}: layer {dense[0]['name']!r} weights have shapes {k1.shape}/{b1.shape}, "
            f"expected {(flat, _DENSE_UNITS[0])}/{(_DENSE_UNITS[0],)} (input 128x128)."
        )
    # Keras flattens (H, W, C); torch flattens (C, H, W): reorder the kernel's rows.
    c = _CONV_FILTERS[-1]
    k1 = k1.reshape(side, side, c, _DENSE_UNITS[0]).transpose(2, 0, 1, 3).reshape(flat, _DENSE_UNITS[0])
    state["classifier.1.weight"] = np.ascontiguousarray(k1.T)
    state["classifier.1.bias"] = np.ascontiguousarray(b1)

    k2, b2 = _kernel_bias(path, dense[1], weights.get(dense[1]["name"], []))
    if k2.shape != (_DENSE_UNITS[0], 1) or b2.shape != (1,):
        raise ModelImportError(
            f"{path}: layer {dense[1]['name']!r} weights have shapes {k2.shape}/{b2.shape}, "
            f"expected {(_DENSE_UNITS[0], 1)}/(1,)."
        )
    state["classifier.4.weight"] = np.ascontiguousarray(k2.T)
    state["classifier.4.bias"] = np.ascontiguousarray(b2)
    return state
