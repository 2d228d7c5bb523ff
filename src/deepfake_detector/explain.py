"""Grad-CAM heat maps: where in a face crop (or a whole image) the network found fakeness.

The map is taken at the layer the bundle names (``config.explain_layer``, else the
architecture's default in the model registry), never at a guessed one: a map taken at the
first layer only redraws edges and explains nothing. The gradient followed is that of the
fake direction of the logit, so hot areas are those that push ``p_fake`` up, whichever way
the bundle's logit points. Grad-CAM itself comes from the maintained ``grad-cam`` package
(jacobgil/pytorch-grad-cam); this module chooses the layer, the target and the crops, and
maps each heat map back onto the original image.

An :class:`Explainer` works on its own copy of the network: Grad-CAM hooks a layer and
needs gradients, while a shared Detector's model may be serving other threads (the web
page's users) in inference mode at the same time.
"""

from __future__ import annotations

import copy
import difflib
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from .bundle import BundleConfig
from .errors import InvalidArgumentError, MissingDependencyError, UnknownLayerError, reraise_interrupt
from .faces.base import FaceBox
from .faces.crop import CropSpec, crop_box
from .results import SCORED_NOTHING, SCORED_WHOLE_IMAGE, FaceResult, Prediction

if TYPE_CHECKING:
    from .detector import Detector

MAX_EXPLAIN_BATCH = 16  # crops per Grad-CAM pass: a backward pass holds every activation
DEFAULT_ALPHA = 0.5


@dataclass
class HeatMap:
    """The Grad-CAM map of one scored region: a face crop, or the whole image.

    ``crop_map`` is in the crop's pixel frame (``crop.shape[:2]``), values in [0, 1];
    ``region`` is ``(x0, y0, x1, y1)``, the part of the original image the crop covers,
    so :meth:`image_map` can place the map in the original frame. ``p_fake`` is the
    network's score for the crop in the pass that made the map.
    """

    name: str
    region: tuple[int, int, int, int]
    image_size: tuple[int, int]  # (height, width) of the original image
    crop: np.ndarray = field(repr=False)
    crop_map: np.ndarray = field(repr=False)
    p_fake: float
    face: FaceResult | None = None

    def image_map(self) -> np.ndarray:
        """The map in the original image's frame (``HxW`` float32), zero outside ``region``.

        Built on demand: a dozen full-size float maps of a large photo would be costly to keep.
        """
        out = np.zeros(self.image_size, np.float32)
        x0, y0, x1, y1 = self.region
        out[y0:y1, x0:x1] = self.crop_map
        return out

    def overlay(self, alpha: float = DEFAULT_ALPHA) -> Image.Image:
        """The crop with its heat map laid over it."""
        return overlay(self.crop, self.crop_map, alpha)


@dataclass
class Explanation:
    """Every heat map of one image (or video frame), and the layer they were taken at."""

    image: np.ndarray = field(repr=False)
    heat_maps: list[HeatMap]
    layer: str

    def image_map(self) -> np.ndarray:
        """All regions' maps in the original frame; where face crops overlap, the hotter wins."""
        out = np.zeros(self.image.shape[:2], np.float32)
        for heat in self.heat_maps:
            x0, y0, x1, y1 = heat.region
            np.maximum(out[y0:y1, x0:x1], heat.crop_map, out=out[y0:y1, x0:x1])
        return out

    def overlay(self, alpha: float = DEFAULT_ALPHA) -> Image.Image:
        """The original image with every region's heat map laid over it."""
        return overlay(self.image, self.image_map(), alpha)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = DEFAULT_ALPHA) -> Image.Image:
    """``image`` (``HxWx3`` uint8) with ``heat`` (``HxW``, [0, 1]) drawn in the jet colours.

    The colour's weight grows with the heat, so cold areas keep their own pixels and the
    picture stays recognisable around the hot spots.
    """
    from matplotlib import colormaps

    if not 0.0 <= alpha <= 1.0:
        raise InvalidArgumentError(f"The 'alpha' parameter must lie in [0, 1]; got {alpha!r}.")
    if image.ndim != 3 or heat.shape != image.shape[:2]:
        raise InvalidArgumentError(
            f"The heat map's shape {heat.shape} does not fit the image's {image.shape}; expected {image.shape[:2]}."
        )
    heat = np.clip(heat.astype(np.float32), 0.0, 1.0)
    colours = colormaps["jet"](heat)[..., :3].astype(np.float32) * 255.0
    weight = alpha * heat[..., None]
    blended = image.astype(np.float32) * (1.0 - weight) + colours * weight
    return Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8))


def resolve_layer_name(config: BundleConfig) -> str:
    """The layer to explain at: the bundle's ``explain_layer``, else its architecture's default."""
    if config.explain_layer:
        return config.explain_layer
    from .models import get_spec

    name = get_spec(config.arch).explain_layer
    if not name:
        raise UnknownLayerError(
            f"Neither the bundle nor architecture {config.arch!r} names a layer to explain at; "
            "set 'explain_layer' in the bundle's config.json."
        )
    return name


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """The sub-module called ``name``; an unknown name raises with the closest names there are."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownLayerError(
            f"Layer {name!r} is not in the {type(model).__name__} network.{hint} "
            f"Its layers include: {', '.join(names[:12])}{', ...' if len(names) > 12 else ''}."
        ) from None


class _FakeDirection:
    """Grad-CAM's target: the logit as log-odds of fake, whichever way the bundle's points."""

    def __init__(self, output: str) -> None:
        self.sign = 1.0 if output == "logit_fake" else -1.0

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        return self.sign * model_output.reshape(-1)[0]


class Explainer:
    """Grad-CAM for one bundle's network, at the layer its config names.

    Safe to share between threads: it holds its own copy of the network and explains one
    batch at a time under a lock.
    """

    def __init__(self, model: nn.Module, config: BundleConfig, *, layer: str | None = None) -> None:
        self.config = config
        self.preprocessing = config.preprocessing
        self.layer_name = layer or resolve_layer_name(config)
        from .export import OnnxRunner

        if isinstance(model, OnnxRunner):
            raise UnknownLayerError(
                "Grad-CAM needs the network's layers, which an ONNX-loaded detector does not expose; "
                "explain from the bundle folder (with its model.safetensors), or load it with runtime='torch'."
            )
        self.model = copy.deepcopy(model).eval()
        self.layer = find_layer(self.model, self.layer_name)
        self._lock = threading.Lock()

    @classmethod
    def for_detector(cls, detector: Detector, *, member: int = 0, layer: str | None = None) -> Explainer:
        """An explainer for a loaded Detector's network and config (read, never changed).

        An ensemble's scores mix several networks, and Grad-CAM follows one: a Detector with
        ``members`` (see :class:`~deepfake_detector.ensemble.Member`) is explained through
        member ``member``, the first by default.

        An ONNX graph has no layers to hook, so a Detector that scores with onnxruntime is
        explained through the PyTorch network of the bundle it was loaded from (the export
        agrees with it to 1e-4); an export folder without the bundle's weights cannot be.
        """
        from .bundle import WEIGHTS_FILE, load_bundle
        from .ensemble import EnsembleConfig

        model, config = detector.model, detector.config
        members = getattr(detector, "members", None)
        if members:  # a bundle's Detector holds itself as its one member
            model, config = members[member].model, members[member].config
        source = getattr(detector, "source", None)
        if getattr(detector, "runtime", "torch") == "onnx" and source is not None:
            folder = source / members[member].name if isinstance(detector.config, EnsembleConfig) else source
            if (folder / WEIGHTS_FILE).is_file():
                config, model = load_bundle(folder)
        return cls(model, config, layer=layer)

    def heat_maps(self, pixels: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        """Grad-CAM maps of ``HxWx3`` uint8 crops, each in its crop's frame, and their p_fake."""
        maps: list[np.ndarray] = []
        scores = [np.zeros(0)]
        for start in range(0, len(pixels), MAX_EXPLAIN_BATCH):
            chunk = pixels[start : start + MAX_EXPLAIN_BATCH]
            square, p_fake = self._grad_cam(chunk)
            maps.extend(_resize_map(m, crop.shape[:2]) for m, crop in zip(square, chunk))
            scores.append(p_fake)
        return maps, np.concatenate(scores)

    def _grad_cam(self, pixels: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``(N, S, S)`` maps in [0, 1] at the model's input size, and the N p_fake values."""
        try:
            from pytorch_grad_cam import GradCAM
        except ImportError as exc:
            reraise_interrupt(exc)
            raise MissingDependencyError("Grad-CAM explanations", "grad-cam", "pip install grad-cam", exc) from exc
        device = next(self.model.parameters()).device
        x = torch.from_numpy(np.stack([self.preprocessing(p) for p in pixels])).to(device)
        targets = [_FakeDirection(self.config.output)] * len(pixels)
        with self._lock, torch.enable_grad():
            cam = GradCAM(model=self.model, target_layers=[self.layer])
            try:
                maps = cam(input_tensor=x, targets=targets)
                p_fake = self.config.p_fake_from_logits(cam.outputs.detach()).cpu().numpy().astype(np.float64)
            finally:
                cam.activations_and_grads.release()
                self.model.zero_grad(set_to_none=True)  # the weights' gradients are a by-product; free them
        return np.clip(np.asarray(maps, np.float32), 0.0, 1.0), p_fake

    def explain(
        self, image: np.ndarray, faces: Sequence[FaceResult] = (), *, whole_image: bool | None = None
    ) -> Explanation:
        """Heat maps of one ``HxWx3`` uint8 image: of each scored face in ``faces`` (boxes from a
        Prediction, cropped as the Detector crops them), or of the whole image.

        ``whole_image`` defaults to "no faces given"; faces that were found but not scored (too
        small) give no map, as they gave no score.
        """
        if whole_image is None:
            whole_image = not faces
        height, width = image.shape[:2]
        regions: list[tuple[str, tuple[int, int, int, int], FaceResult | None]] = []
        if whole_image:
            regions.append(("image", (0, 0, width, height), None))
        else:
            spec = self.preprocessing.crop or CropSpec()
            for i, face in enumerate(faces):
                if face.p_fake is not None:
                    region = crop_box(FaceBox(*face.box, score=face.detector_score), (height, width), spec)
                    regions.append((f"face{i}", region, face))
        crops = [image[y0:y1, x0:x1] for _, (x0, y0, x1, y1), _ in regions]
        maps, p_fake = self.heat_maps(crops) if crops else ([], np.zeros(0))
        heat_maps = [
            HeatMap(name, region, (height, width), crop, heat, float(p), face)
            for (name, region, face), crop, heat, p in zip(regions, crops, maps, p_fake)
        ]
        return Explanation(image, heat_maps, self.layer_name)

    def explain_prediction(self, prediction: Prediction) -> list[tuple[str, Explanation]]:
        """Heat maps for what a Prediction was judged on, one Explanation per picture it kept:
        the image, or a video's most suspicious frames. Needs ``keep_media=True`` at predict time."""
        if prediction.artifacts is None:
            raise InvalidArgumentError("The prediction holds no pixels to explain; predict with keep_media=True first.")
        if prediction.scored_on == SCORED_NOTHING:
            return []
        whole = prediction.scored_on == SCORED_WHOLE_IMAGE
        return [
            (name, self.explain(image, faces, whole_image=whole)) for name, image, faces in prediction.artifacts.images
        ]


def _resize_map(heat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A map resized to ``shape`` (height, width), as the crop was squeezed to the input size."""
    if heat.shape == shape:
        return heat
    resized = Image.fromarray(heat.astype(np.float32)).resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, np.float32), 0.0, 1.0)
