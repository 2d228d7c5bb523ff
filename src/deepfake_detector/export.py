"""ONNX export of a bundle's network, and the onnxruntime runner that scores with it.

``export_bundle`` writes ``model.onnx`` and a copy of the bundle's ``config.json`` beside
it, by default into ``BUNDLE/onnx/``, so the bundle folder stays one thing to copy around
and its own files are never overwritten. The graph takes resized uint8 pixels as channel
planes, ``(N, 3, S, S)`` with a dynamic batch axis, and returns raw logits: the scaling and
normalisation of :class:`~deepfake_detector.preprocess.Preprocessing` run inside it
(``PixelInput``), where onnxruntime does them for a whole batch on its own threads instead
of the decoding threads doing them image by image beside it; that is what lets a folder's
throughput come near the bare network's. Resizing, face cropping and the logit's
orientation stay with the Detector and the config, shared with the torch network. Earlier
exports took the normalised float ``(N, 3, S, S)`` batch, or channels-last pixels ``(N, S,
S, 3)``; ``OnnxRunner`` still runs both (``takes_pixels`` says which kind of input it needs).

The export is checked before it is written: onnxruntime must give the torch network's
p_fake to within ``AGREEMENT`` on a random batch, or nothing is written. The ONNX file
records the SHA-256 of the weights it came from, so loading it through a bundle folder
whose ``model.safetensors`` has since changed (retrained into the same folder, which
carries ``onnx/`` over) fails instead of silently scoring with old weights.

Ensembles are refused: export each member bundle instead. Only torch's TorchScript-based
exporter (``dynamo=False``) is used: the torch.export-based one needs onnxscript, a
further dependency, for no gain on these convolutional networks.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .bundle import CONFIG_FILE, WEIGHTS_FILE, BundleConfig, load_bundle, read_config
from .ensemble import is_ensemble
from .errors import BundleError, ExportError, InvalidArgumentError, MissingDependencyError, reraise_interrupt
from .preprocess import Preprocessing

FORMATS = ("onnx",)
ONNX_FILE = "model.onnx"
ONNX_DIR = "onnx"  # the default export folder, inside the bundle
OPSET = 17  # supported by every onnxruntime since 1.14
AGREEMENT = 1e-4  # largest |p_fake(onnx) - p_fake(torch)| an export may show
INPUT_NAME, OUTPUT_NAME = "input", "logits"
WEIGHTS_SHA_KEY = "deepfake_detector.weights_sha256"
INPUT_STEP_KEY = "deepfake_detector.input_step"  # the normalisation baked into a pixel-input graph
INSTALL = "pip install 'deepfake-detector[onnx]'"


def _import(module: str, what: str) -> Any:
    """Import an optional package, or raise the typed error that says how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        reraise_interrupt(exc)
        raise MissingDependencyError(what, module, INSTALL, exc) from exc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class PixelInput(nn.Module):
    """A network behind its bundle's input step: ``(N, 3, S, S)`` uint8 planes in, logits out.

    Computes ``(v / 255 - mean) / std`` as one multiply and one add in float32, which
    onnxruntime runs faster than the three steps: the network's inputs differ from
    ``Preprocessing``'s look-up table by float32 rounding (a few units in the last place)."""

    takes_pixels = True

    def __init__(self, network: nn.Module, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.network = network
        mean = torch.tensor(preprocessing.mean, dtype=torch.float32).reshape(1, 3, 1, 1)
        std = torch.tensor(preprocessing.std, dtype=torch.float32).reshape(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", -mean / std)

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        return self.network(planes.to(torch.float32) * self.scale + self.shift)


def network_to_onnx(model: nn.Module, example: torch.Tensor, source: Path) -> bytes:
    """``model`` as ONNX bytes, its input shaped like ``example`` but with a dynamic batch
    axis, or ExportError naming ``source``."""
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter announces its own deprecation on every call; it is chosen on purpose.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(
                model,
                (example,),
                buffer,
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
    except Exception as exc:  # noqa: BLE001 - any exporter failure is this bundle's export failing
        raise ExportError(
            f"{source}: torch could not export the network to ONNX ({type(exc).__name__}: {exc})."
        ) from exc
    return buffer.getvalue()


def _check_agreement(model: nn.Module, runner: OnnxRunner, config: BundleConfig, source: Path) -> float:
    """The largest p_fake difference between torch (the bundle's preprocessing, then the network)
    and onnxruntime (pixels into the graph) on random pictures; raises past AGREEMENT."""
    size = config.preprocessing.input_size
    pixels = np.random.default_rng(0).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    x = torch.from_numpy(np.stack([config.preprocessing(p) for p in pixels]))
    planes = torch.from_numpy(np.stack([config.preprocessing.planes(p) for p in pixels]))
    with torch.inference_mode():
        expected = config.p_fake_from_logits(model(x))
        gap = float((expected - config.p_fake_from_logits(runner(planes))).abs().max())
    if not gap <= AGREEMENT:  # also refuses NaN
        raise ExportError(
            f"{source}: the ONNX model's p_fake differs from PyTorch's by {gap:.2e} (more than {AGREEMENT:g}); "
            "nothing was written. Use runtime='torch' for this bundle."
        )
    return gap


def _input_step(preprocessing: Preprocessing) -> str:
    """What a pixel-input graph bakes in from the config, as recorded in its metadata."""
    return json.dumps(
        {"input_size": preprocessing.input_size, "mean": list(preprocessing.mean), "std": list(preprocessing.std)},
        sort_keys=True,
    )


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def export_bundle(bundle_dir: str | Path, out_dir: str | Path | None = None, *, format: str = "onnx") -> Path:
    """Write the bundle's network as ``model.onnx`` with its ``config.json`` into ``out_dir``
    (default ``BUNDLE/onnx``); returns that folder. Raises ExportError for an ensemble or a
    network that does not export faithfully, BundleError for a folder that is not a bundle,
    MissingDependencyError without onnx or onnxruntime."""
    if format not in FORMATS:
        raise InvalidArgumentError(f"Unknown export format {format!r}; expected one of {FORMATS}.")
    bundle_dir = Path(bundle_dir)
    if is_ensemble(bundle_dir):
        raise ExportError(
            f"{bundle_dir}: is an ensemble; export takes one bundle. Export each member folder in it instead."
        )
    onnx = _import("onnx", "ONNX export")
    _import("onnxruntime", "ONNX export")
    config, model = load_bundle(bundle_dir)
    out = Path(out_dir) if out_dir is not None else bundle_dir / ONNX_DIR
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a folder; choose another output folder.")
    present = [p.name for p in out.iterdir()] if out.is_dir() else []
    # An earlier export's two files are replaced; hidden ones (.DS_Store, a crashed export's temporary file) ignored.
    others = sorted(name for name in present if name not in (ONNX_FILE, CONFIG_FILE) and not name.startswith("."))
    if others:  # another bundle, say: its config.json would be replaced by this one's
        raise ExportError(
            f"{out}: holds files other than an earlier export ({', '.join(others[:3])}"
            f"{', ...' if len(others) > 3 else ''}); export into an empty folder or an earlier export's."
        )

    size = config.preprocessing.input_size
    planes = torch.zeros(2, 3, size, size, dtype=torch.uint8)
    proto = onnx.load_from_string(network_to_onnx(PixelInput(model, config.preprocessing).eval(), planes, bundle_dir))
    onnx.helper.set_model_props(
        proto,
        {WEIGHTS_SHA_KEY: _sha256(bundle_dir / WEIGHTS_FILE), INPUT_STEP_KEY: _input_step(config.preprocessing)},
    )
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{bundle_dir}: the exported ONNX model is invalid ({exc}).") from exc
    data = proto.SerializeToString()
    _check_agreement(model, OnnxRunner(data), config, bundle_dir)

    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / ONNX_FILE, data)
    tmp_config = out / f".{CONFIG_FILE}.{uuid.uuid4().hex[:12]}.tmp"
    shutil.copyfile(bundle_dir / CONFIG_FILE, tmp_config)
    os.replace(tmp_config, out / CONFIG_FILE)
    return out


class OnnxRunner(nn.Module):
    """An ONNX network run by onnxruntime on the CPU, called like the torch network it replaces.

    A ``nn.Module`` with no parameters, so a Detector holds it where it holds a network
    (``.to``, ``.eval`` and its scoring code work unchanged): tensor in, raw logits out.
    ``takes_pixels``: the graph takes resized uint8 ``(N, 3, S, S)`` planes (exports made by
    this version; the channels-last pixels of the version before are rearranged for their
    graph here), else a preprocessed float ``(N, 3, S, S)`` batch (earlier exports).
    ``InferenceSession.run`` is thread-safe, as a shared Detector needs. Intra-op threads
    default to ``min(2, cpu count)``, the setting issue 11's speed figures were measured
    with; the Detector's decoding threads need the remaining cores.
    """

    def __init__(self, model: bytes | str | Path, threads: int | None = None) -> None:
        super().__init__()
        ort = _import("onnxruntime", "runtime='onnx'")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or min(2, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        # Idle onnxruntime threads spin by default, taking the cores the decoding threads need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        source = model if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors for a bad file
            name = "<ONNX bytes>" if isinstance(model, bytes) else str(model)
            raise BundleError(f"{name}: onnxruntime cannot load the model ({type(exc).__name__}: {exc}).") from exc
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        self.takes_pixels = graph_input.type == "tensor(uint8)"
        shape = list(graph_input.shape)
        self._channels_last = self.takes_pixels and shape[-1] == 3 and shape[1] != 3
        self.input_shape: list[int | str] = [shape[0], 3, *shape[1:3]] if self._channels_last else shape
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw logits, as a CPU tensor, for a uint8 ``(N, 3, S, S)`` batch of resized planes
        (``takes_pixels``) or a float32 ``(N, 3, S, S)`` preprocessed batch (earlier exports)."""
        expected = torch.uint8 if self.takes_pixels else torch.float32
        if x.dtype != expected or x.ndim != 4 or list(x.shape[1:]) != self.input_shape[1:]:
            kind = "uint8 (N, 3, S, S) pixel planes" if self.takes_pixels else "a float32 (N, 3, S, S) batch"
            raise InvalidArgumentError(
                f"This ONNX model takes {kind} of shape {['N', *self.input_shape[1:]]}; "
                f"got a {x.dtype} tensor of shape {list(x.shape)}."
            )
        batch = x.detach().cpu().numpy()
        if self._channels_last:
            batch = batch.transpose(0, 2, 3, 1)
        batch = np.ascontiguousarray(batch)
        return torch.from_numpy(self.session.run(None, {self.input_name: batch})[0])


def find_onnx(folder: str | Path) -> Path | None:
    """The ONNX model of an export folder (``model.onnx``) or of a bundle (``onnx/model.onnx``), if any."""
    for path in (Path(folder) / ONNX_FILE, Path(folder) / ONNX_DIR / ONNX_FILE):
        if path.is_file():
            return path
    return None


def load_onnx(folder: str | Path, threads: int | None = None) -> tuple[BundleConfig, OnnxRunner]:
    """The config and an onnxruntime runner for an export folder (``model.onnx`` and
    ``config.json``) or a bundle folder holding ``onnx/model.onnx``.

    Through a bundle folder the bundle's own ``config.json`` is used, since calibrating
    rewrites it in place and the threshold does not change the network; the ONNX file must
    come from the bundle's current weights. ``threads``: onnxruntime's intra-op threads
    (default ``min(2, cpu count)``).
    """
    folder = Path(folder)
    if is_ensemble(folder):
        raise ExportError(f"{folder}: is an ensemble; load it with Detector.load, which loads each member's export.")
    config = read_config(folder)
    path = find_onnx(folder)
    if path is None:
        raise BundleError(
            f"{folder}: no ONNX model ({ONNX_FILE} or {ONNX_DIR}/{ONNX_FILE}); "
            f"make one with: deepfake-detector export {folder} --format onnx"
        )
    runner = OnnxRunner(path, threads)
    weights = folder / WEIGHTS_FILE
    if weights.is_file() and runner.metadata.get(WEIGHTS_SHA_KEY) != _sha256(weights):
        raise BundleError(
            f"{path}: was not exported from {weights} as it is now (retrained since?); "
            f"export again with: deepfake-detector export {folder} --format onnx"
        )
    if runner.takes_pixels and runner.metadata.get(INPUT_STEP_KEY) != _input_step(config.preprocessing):
        raise BundleError(
            f"{path}: its built-in input size and normalisation differ from the preprocessing in "
            f"{folder / CONFIG_FILE} (edited since?); "
            f"export again with: deepfake-detector export {folder} --format onnx"
        )
    return config, runner
