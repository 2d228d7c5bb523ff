"""Detector: a loaded bundle that turns images and videos into Predictions.

For each image the detector finds the faces (when the bundle was trained on face crops,
or when asked), crops each one exactly as the bundle's training data were cropped, scores
every face and combines them (see :mod:`deepfake_detector.verdict`). Videos stream
frame by frame: faces are linked into tracks and the video is judged on its tracks.

``predict`` takes one input; ``predict_many`` streams any number, decoding and finding
faces in a thread pool while the model scores batches, and yields results in input
order. A bad input becomes a failed Prediction naming the reason; the rest go on.

An image's verdict is ``uncertain`` when its p_fake lies within the uncertain band of
the threshold, or, with the re-encoding check on, when a re-encoded copy of the image
(JPEG, rescaled) gets another label: the copies of each model input are made before
preprocessing and scored in the same forward passes as the input itself.

A Detector may hold an ensemble (see :mod:`deepfake_detector.ensemble`): faces are found
and cropped once, every member scores each crop after its own preprocessing, and the
members' scores combine into the one ``p_fake`` that everything above uses.
"""

from __future__ import annotations

import functools
import os
import threading
import time
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import nn

from .bundle import BundleConfig, load_bundle
from .devices import pick_device
from .ensemble import EnsembleConfig, Member, is_ensemble, load_ensemble
from .errors import BundleError, DeepfakeDetectorError, InvalidArgumentError, reraise_interrupt
from .face_crops import MIN_FACE, face_crops
from .faces.base import FaceDetector
from .faces.crop import CropSpec
from .media.image import encode_jpeg, load_image
from .media.video import FrameSampling, is_video_path
from .results import (
    FACE_SCORED,
    FACE_TOO_SMALL,
    LABEL_UNCERTAIN,
    SCORED_FACES,
    SCORED_NOTHING,
    SCORED_WHOLE_IMAGE,
    Artifacts,
    FaceResult,
    Prediction,
)
from .threshold import Reencode, check_band, confidence_for, label_for, label_under_copies
from .verdict import aggregate_faces, check_aggregate
from .video_judge import VideoProgress, judge_video

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]
Loader = Callable[[Any], np.ndarray]
CropSink = Callable[[str | None, str, np.ndarray], None]
# One prepared model input: an array, or one array per distinct input step of an ensemble's members.
ModelInput = Union[np.ndarray, tuple[np.ndarray, ...]]

FACE_MODES = ("auto", "off", "only")
RUNTIMES = ("auto", "torch", "onnx")
MAX_MODEL_BATCH = 64  # inputs per forward pass, however many faces one picture holds
# Re-encoded copies of a larger picture are made from it shrunk to this longer side: the model
# sees it at its input size anyway, and re-encoding tens of megapixels four times would take
# seconds and gigabytes (and JPEG cannot hold a side over 65,500 px).
REENCODE_MAX_SIDE = 2048


def source_name(source: Any) -> str | None:
    """The name a result carries for its input: the path for files, else ``None``."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return None


@dataclass
class _Analysed:
    """One image made ready for the model: its inputs and what each stands for.

    ``copies`` holds, per kind of re-encoded copy (see :class:`Reencode`), the copy of each
    input, aligned with ``inputs``; empty when the re-encoding check is off.
    """

    inputs: list[ModelInput] = field(default_factory=list)
    faces: list[FaceResult] = field(default_factory=list)
    scored_on: str = SCORED_WHOLE_IMAGE
    note: str | None = None
    crops: list[tuple[str, np.ndarray]] = field(default_factory=list)  # kept only for an on_crop sink
    copies: list[list[ModelInput]] = field(default_factory=list)
    flipped: list[str] = field(default_factory=list)  # the copies under which the image's verdict flips

    def model_inputs(self) -> list[ModelInput]:
        """Everything the model scores for this image: the inputs, then each kind of copy."""
        return self.inputs + [x for kind in self.copies for x in kind]


@dataclass
class _Item:
    source: Any
    analysed: _Analysed | None
    error: str | None
    seconds: float
    image: np.ndarray | None = None


@dataclass
class Options:
    """Per-call choices; passed along rather than stored on the shared Detector."""

    threshold: float
    faces: str
    aggregate: str
    keep_media: bool
    on_crop: CropSink | None
    band: float = 0.0
    reencode: Reencode | None = None


class Detector:
    """A model bundle, or an ensemble of bundles, ready to score images and videos.

    Safe to share between threads: per-call choices (threshold, face mode) are arguments,
    never state, and the face detector is created once under a lock.

    ``config`` is the bundle's config, or an ensemble's ``ensemble.json``: either way it
    holds the threshold, the uncertain rule, the metrics and the training description of
    the ``p_fake`` this Detector gives. ``members`` holds each network with its bundle
    config (a bundle's Detector has one); ``model`` is the bundle's network, or an
    ``nn.ModuleList`` of the members'. ``preprocessing`` is the bundle's, or the first
    member's for an ensemble, whose crop and face detector all members share.
    """

    def __init__(
        self,
        config: BundleConfig | EnsembleConfig,
        model: nn.Module | None = None,
        *,
        members: Sequence[Member] = (),
        device: str | torch.device = "cpu",
        name: str | None = None,
        face_detector: str | FaceDetector = "auto",
        min_face: int = MIN_FACE,
        runtime: str = "torch",
        source: Path | None = None,
    ) -> None:
        if isinstance(config, EnsembleConfig):
            if model is not None or len(members) != len(config.members):
                raise InvalidArgumentError(
                    f"An ensemble's Detector takes one member per name in its config ({len(config.members)}) "
                    f"and no model; got {len(members)} member(s){' and a model' if model is not None else ''}."
                )
            self.name = name or config.name or "ensemble"
            self.members = list(members)
            model = nn.ModuleList(m.model for m in self.members)
        else:
            if model is None or members:
                raise InvalidArgumentError("A bundle's Detector takes its model and no members.")
            self.name = name or config.name or config.arch
            self.members = [Member(self.name, config, model)]
        self.config = config
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.preprocessing = self.members[0].config.preprocessing
        # Members with equal input steps share one prepared copy of each input. A network
        # exported with its input step inside (``OnnxRunner.takes_pixels``) gets resized uint8
        # planes; any other gets the whole preprocessing.
        steps = [(m.config.preprocessing, bool(getattr(m.model, "takes_pixels", False))) for m in self.members]
        self._steps = list(dict.fromkeys(steps))
        self._transform_of = [self._steps.index(step) for step in steps]
        self._transforms: list[Callable[[np.ndarray], np.ndarray]] = [
            preprocessing.planes if takes_pixels else preprocessing for preprocessing, takes_pixels in self._steps
        ]
        self._model_input: Callable[[np.ndarray], ModelInput] = (
            self._transforms[0] if len(self._transforms) == 1 else self._each_transform
        )
        self._combine = config.combine_scores if isinstance(config, EnsembleConfig) else None
        self.min_face = min_face
        self._face_detector_choice = face_detector
        self._face_detector: FaceDetector | None = None if isinstance(face_detector, str) else face_detector
        self._lock = threading.Lock()
        self.runtime = runtime  # what runs the network: "torch", or "onnx" for onnxruntime runners
        self.source = source  # the folder the bundle was read from, for tools that need its torch network

    @classmethod
    def load(
        cls,
        bundle_dir: str | Path | None = None,
        *,
        device: str = "auto",
        face_detector: str | FaceDetector = "auto",
        min_face: int = MIN_FACE,
        runtime: str = "auto",
        threads: int | None = None,
    ) -> Detector:
        """Load a bundle folder (``config.json`` + ``model.safetensors``) or an ensemble
        folder (``ensemble.json`` + one bundle folder per member); with none, the detector
        shipped inside the package.

        ``runtime`` picks what runs the network. ``"onnx"``: onnxruntime on the CPU, from an
        export folder or a bundle's ``onnx/`` (see :mod:`deepfake_detector.export`).
        ``"torch"``: PyTorch, on ``device``. ``"auto"`` (the default): onnxruntime when the
        network runs on the CPU and the bundle holds an ONNX export of its current weights
        (an export is only written when it agrees with PyTorch), since it is several times
        faster there; PyTorch otherwise (GPUs, bundles without an export). An ensemble takes
        onnxruntime when every member bundle holds a current export. The
        preprocessing and p_fake are the same either way; ``Detector.runtime`` says which
        one was taken. ``threads`` sets onnxruntime's intra-op threads (default ``min(2, CPUs)``;
        a process that shares its machine, a Ray actor say, gives its own share). Grad-CAM
        always runs the PyTorch network (see
        :meth:`Explainer.for_detector <deepfake_detector.explain.Explainer.for_detector>`).
        """
        if runtime not in RUNTIMES:
            raise InvalidArgumentError(f"The 'runtime' parameter must be one of {RUNTIMES}; got {runtime!r}.")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise InvalidArgumentError(f"The 'threads' parameter must be a positive integer; got {threads!r}.")
        if bundle_dir is None:
            from .shipped import default_model_dir

            bundle_dir = default_model_dir()
        bundle_dir = Path(bundle_dir)
        if runtime == "onnx" and device not in ("auto", "cpu"):
            raise InvalidArgumentError(f"runtime='onnx' runs on the CPU; got device={device!r}.")
        torch_device = pick_device("cpu" if runtime == "onnx" else device)
        ensemble = is_ensemble(bundle_dir)
        loaded: Any = None
        if runtime == "onnx" or (runtime == "auto" and torch_device.type == "cpu" and _may_use_onnx(bundle_dir)):
            from .export import load_onnx

            try:
                load = functools.partial(load_onnx, threads=threads)
                loaded = load_ensemble(bundle_dir, load) if ensemble else load(bundle_dir)
                runtime = "onnx"
            except BundleError as exc:
                if runtime == "onnx":
                    raise
                warnings.warn(f"{exc} Scoring with PyTorch instead.", stacklevel=2)
        if loaded is None:
            runtime = "torch"
            loaded = load_ensemble(bundle_dir) if ensemble else load_bundle(bundle_dir)
        config: BundleConfig | EnsembleConfig
        model: nn.Module | None
        members: list[Member]
        if ensemble:
            (config, members), model = loaded, None
            preprocessing = members[0].config.preprocessing
        else:
            (config, model), members = loaded, []
            preprocessing = config.preprocessing
        if face_detector == "auto" and preprocessing.face_detector:
            face_detector = preprocessing.face_detector  # the detector the training crops came from
        return cls(
            config,
            model,
            members=members,
            device=torch_device,
            name=config.name or bundle_dir.name,
            face_detector=face_detector,
            min_face=min_face,
            runtime=runtime,
            source=bundle_dir,
        )

    @property
    def threshold(self) -> float:
        """The bundle's decision threshold, chosen on validation data."""
        return self.config.threshold

    @property
    def face_detector(self) -> FaceDetector:
        """The face detector, created on first use."""
        with self._lock:
            if self._face_detector is None:
                from .faces import create_face_detector

                self._face_detector = create_face_detector(str(self._face_detector_choice))
            return self._face_detector

    def uses_faces(self, faces: str = "auto") -> bool:
        """Whether images are judged on face crops: always with ``"only"``, never with
        ``"off"``, and with ``"auto"`` when the bundle was trained on face crops."""
        return faces == "only" or (faces == "auto" and self.preprocessing.crop is not None)

    def decode_size(self, faces: str = "auto") -> int | None:
        """The smallest side a JPEG needs to be decoded at for this detector (see
        ``load_image(min_side=...)``), or None for full size: images scored whole are decoded
        as training decoded them (:attr:`Preprocessing.decode_side`); face crops need the
        full-size picture. Every front end decodes with this, so p_fake does not depend on it."""
        if self.uses_faces(faces):
            return None
        return max(preprocessing.decode_side for preprocessing, _ in self._steps)

    def _loader(self, opts: Options) -> Loader:
        """How an image source is read under ``opts``: at reduced scale where :meth:`decode_size` allows."""
        return functools.partial(load_image, min_side=self.decode_size(opts.faces))

    def _options(
        self,
        threshold: float | None,
        faces: str,
        aggregate: str,
        keep_media: bool,
        on_crop: CropSink | None,
        uncertain_band: float | None = None,
        reencode_check: bool | None = None,
    ) -> Options:
        if threshold is None:
            threshold = self.config.threshold
        elif isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise InvalidArgumentError(f"The 'threshold' parameter must be a float in [0, 1]; got {threshold!r}.")
        if faces not in FACE_MODES:
            raise InvalidArgumentError(f"The 'faces' parameter must be one of {FACE_MODES}; got {faces!r}.")
        if self.uses_faces(faces):
            self.face_detector  # noqa: B018 - build it now: a bad name or missing package fails once, here
        band = check_band(self.config.uncertain.get("band", 0.0) if uncertain_band is None else uncertain_band)
        if reencode_check is None:
            reencode = self.config.reencode
        elif isinstance(reencode_check, bool):
            reencode = (self.config.reencode or Reencode()) if reencode_check else None
        else:
            raise InvalidArgumentError(
                f"The 'reencode_check' parameter must be True, False or None; got {reencode_check!r}."
            )
        return Options(float(threshold), faces, check_aggregate(aggregate), keep_media, on_crop, band, reencode)

    # ------------------------------------------------------------------ scoring

    def score_batch(self, images: list[np.ndarray]) -> np.ndarray:
        """``p_fake`` for already decoded ``HxWx3`` uint8 images, each taken whole."""
        return self._p_fake([self._model_input(im) for im in images])

    def _each_transform(self, pixels: np.ndarray) -> tuple[np.ndarray, ...]:
        """An ensemble's model input: ``pixels`` after each distinct input step of its members."""
        return tuple(transform(pixels) for transform in self._transforms)

    @torch.inference_mode()
    def _p_fake(self, inputs: list[ModelInput]) -> np.ndarray:
        """``p_fake`` for model inputs (``3xSxS`` float arrays or resized uint8 planes, or
        tuples of them: see ``_model_input``), in forward passes of at most MAX_MODEL_BATCH; an
        ensemble's members each score every input, and their scores combine."""
        scores = [np.zeros(0)]
        for start in range(0, len(inputs), MAX_MODEL_BATCH):
            chunk = inputs[start : start + MAX_MODEL_BATCH]
            if len(self._transforms) == 1:
                batches = [torch.from_numpy(np.stack(chunk)).to(self.device)]
            else:
                batches = [
                    torch.from_numpy(np.stack([x[k] for x in chunk])).to(self.device)
                    for k in range(len(self._transforms))
                ]
            member_scores = [
                m.config.p_fake_from_logits(m.model(batches[k])).cpu().numpy().astype(np.float64)
                for m, k in zip(self.members, self._transform_of)
            ]
            scores.append(member_scores[0] if self._combine is None else self._combine(np.stack(member_scores)))
        return np.concatenate(scores)

    def _analyse(self, image: np.ndarray, opts: Options, prefix: str = "") -> _Analysed:
        """Find and crop the faces of one image (or take it whole) and preprocess the model inputs."""
        if not self.uses_faces(opts.faces):
            return self._with_input(_Analysed(), image, opts)
        out = _Analysed(scored_on=SCORED_FACES)
        found = face_crops(image, self.face_detector, self.preprocessing.crop or CropSpec(), self.min_face)
        for i, (box, crop) in enumerate(found):
            result = FaceResult(box=(box.x, box.y, box.w, box.h), detector_score=float(box.score))
            if crop is None:
                result.status = FACE_TOO_SMALL
            else:
                self._with_input(out, crop, opts)
                if opts.on_crop is not None:
                    out.crops.append((f"{prefix}face{i}", crop))
            out.faces.append(result)
        if not out.faces:
            if opts.faces == "only":
                return _Analysed(scored_on=SCORED_NOTHING, note="no face found")
            return self._with_input(_Analysed(note="no face found; the whole image was scored"), image, opts)
        if not out.inputs:
            out.scored_on = SCORED_NOTHING
            out.note = f"{len(out.faces)} face(s) found, all under {self.min_face} px: too small to judge"
        return out

    def _with_input(self, analysed: _Analysed, pixels: np.ndarray, opts: Options) -> _Analysed:
        """Add one model input (a face crop or a whole image) and, with the re-encoding check
        on, its re-encoded copies, made from the uint8 pixels as an upload would be."""
        analysed.inputs.append(self._model_input(pixels))
        if opts.reencode is not None:
            copies = reencoded_copies(pixels, opts.reencode)
            if not analysed.copies:
                analysed.copies = [[] for _ in copies]
            for kind, copy in zip(analysed.copies, copies):
                kind.append(self._model_input(copy))
        return analysed

    def _apply_scores(
        self, analysed: _Analysed, scores: np.ndarray, opts: Options, name: str | None = None
    ) -> float | None:
        """Write face scores into the faces, hand the scored crops to ``on_crop`` (on the
        calling thread), and return the image's p_fake (None if nothing was judged).

        ``scores`` are those of ``analysed.model_inputs()``. With copies, a face whose label
        some copy of its crop does not share becomes uncertain, and ``analysed.flipped``
        names the copies whose aggregate p_fake, taken over faces as the image's is, gets
        another label than the image's.
        """
        if opts.on_crop is not None:
            for crop_name, crop in analysed.crops:
                opts.on_crop(name, crop_name, crop)
            analysed.crops.clear()
        if analysed.scored_on == SCORED_NOTHING:
            return None
        n = len(analysed.inputs)
        own, copies = scores[:n], scores[n:].reshape(len(analysed.copies), n)
        names = opts.reencode.names if opts.reencode is not None else []
        if analysed.scored_on == SCORED_WHOLE_IMAGE:
            p, copy_p = float(own[0]), copies[:, 0]
        else:
            scored = [face for face in analysed.faces if face.status == FACE_SCORED]
            for face, p_face, p_copies in zip(scored, own, copies.T):
                face.p_fake = float(p_face)
                face.label = label_under_copies(face.p_fake, p_copies, names, opts.threshold, opts.band)[0]
            p = aggregate_faces(own, opts.aggregate)
            copy_p = np.array([aggregate_faces(kind, opts.aggregate) for kind in copies])
        analysed.flipped = label_under_copies(p, copy_p, names, opts.threshold, opts.band)[1]
        return p

    def _prediction(
        self, path: str | None, p: float | None, seconds: float, opts: Options, flips: bool = False, **extra: Any
    ) -> Prediction:
        """The Prediction for a p_fake; ``flips``: a re-encoded copy got another label, so uncertain."""
        return Prediction(
            path=path,
            label=None if p is None else LABEL_UNCERTAIN if flips else label_for(p, opts.threshold, opts.band),
            p_fake=p,
            confidence=None if p is None else float(confidence_for(p, opts.threshold)),
            seconds=seconds,
            threshold=opts.threshold,
            model=self.name,
            **extra,
        )

    # ------------------------------------------------------------------ images

    def predict(
        self,
        source: ImageInput,
        *,
        threshold: float | None = None,
        faces: str = "auto",
        aggregate: str = "max",
        sampling: FrameSampling | None = None,
        keep_media: bool = False,
        uncertain_band: float | None = None,
        reencode_check: bool | None = None,
    ) -> Prediction:
        """Judge one image (path, bytes, PIL image or ``HxWx3`` uint8 RGB array) or one video path.

        ``uncertain_band`` overrides the bundle's: a p_fake closer to the threshold than
        this is labelled ``"uncertain"``. ``reencode_check`` overrides the bundle's
        ``uncertain.reencode``: True labels an image (or face) ``"uncertain"`` when a
        re-encoded copy of it gets another label (the bundle's copies, else JPEG q75 and
        q95 and rescales by 0.5 and 0.75), and ``note`` names the copies; False turns the
        check off; p_fake is the input's own either way. Videos use the band only: their
        verdict already rests on several frames, and the copies would multiply the model's
        work on every frame. Bad input raises a
        :class:`~deepfake_detector.errors.DeepfakeDetectorError` naming the input and the reason.
        """
        opts = self._options(threshold, faces, aggregate, keep_media, None, uncertain_band, reencode_check)
        if _is_video(source):
            return judge_video(self, str(source), opts, sampling or FrameSampling(), batch_size=32, progress=None)
        started = time.perf_counter()
        image = self._loader(opts)(source)
        analysed = self._analyse(image, opts)
        p = self._apply_scores(analysed, self._p_fake(analysed.model_inputs()), opts, source_name(source))
        return self._image_prediction(_Item(source, analysed, None, 0.0, image), p, time.perf_counter() - started, opts)

    def _image_prediction(self, item: _Item, p: float | None, seconds: float, opts: Options) -> Prediction:
        analysed = item.analysed
        assert analysed is not None
        artifacts = Artifacts(images=[("image", item.image, analysed.faces)]) if opts.keep_media else None
        note = analysed.note
        if analysed.flipped:
            flips = f"uncertain: the verdict flips under {', '.join(analysed.flipped)}"
            note = flips if note is None else f"{note}; {flips}"
        return self._prediction(
            source_name(item.source),
            p,
            seconds,
            opts,
            bool(analysed.flipped),
            scored_on=analysed.scored_on,
            note=note,
            faces=analysed.faces,
            artifacts=artifacts,
        )

    def _prepare(self, source: Any, loader: Loader, opts: Options) -> _Item:
        started = time.perf_counter()
        try:
            image = loader(source)
            analysed = self._analyse(image, opts)
            return _Item(source, analysed, None, time.perf_counter() - started, image if opts.keep_media else None)
        except DeepfakeDetectorError as exc:
            return _Item(source, None, str(exc), time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - a folder run must go on past any bad file
            name = source_name(source) or "<input>"
            return _Item(
                source,
                None,
                f"{name}: unexpected error while reading ({type(exc).__name__}: {exc})",
                time.perf_counter() - started,
            )

    def predict_many(
        self,
        sources: Iterable[Any],
        *,
        batch_size: int = 32,
        workers: int | None = None,
        threshold: float | None = None,
        faces: str = "auto",
        aggregate: str = "max",
        sampling: FrameSampling | None = None,
        keep_media: bool = False,
        loader: Loader | None = None,
        on_crop: CropSink | None = None,
        video_progress: VideoProgress | None = None,
        uncertain_band: float | None = None,
        reencode_check: bool | None = None,
    ) -> Iterator[Prediction]:
        """Judge many inputs, images and videos mixed, yielding one Prediction each, in input order.

        Images are decoded (and their faces found) in ``workers`` threads while the model
        scores batches of ``batch_size`` inputs; a video is one unit, streamed frame by
        frame. ``loader`` turns an image source into an array (default: ``load_image``,
        at reduced scale where :meth:`decode_size` allows; evaluation's laundering passes
        its own). ``keep_media`` attaches the decoded image (or a video's most
        suspicious frames) as ``Prediction.artifacts``; ``on_crop(path, name, crop)``
        receives every face crop that is scored. ``uncertain_band`` and ``reencode_check``
        are as in :meth:`predict`; the re-encoded copies are scored in the same batches,
        and count towards ``batch_size``. Inputs that fail come back as failed
        Predictions with the reason; nothing is raised for them.
        """
        opts = self._options(threshold, faces, aggregate, keep_media, on_crop, uncertain_band, reencode_check)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(
                f"The 'batch_size' parameter must be an integer of at least 1; got {batch_size!r}."
            )
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise InvalidArgumentError(f"The 'workers' parameter must be an integer of at least 1; got {workers!r}.")
        return self._stream(
            sources,
            batch_size,
            workers or max(1, os.cpu_count() or 1),
            opts,
            loader or self._loader(opts),
            sampling or FrameSampling(),
            video_progress,
        )

    def _stream(
        self,
        sources: Iterable[Any],
        batch_size: int,
        workers: int,
        opts: Options,
        loader: Loader,
        sampling: FrameSampling,
        video_progress: VideoProgress | None,
    ) -> Iterator[Prediction]:
        lookahead = batch_size * 2 + workers
        source_iter = iter(sources)
        pending: deque[tuple[Any, Future | None]] = deque()
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:

            def fill() -> None:
                while len(pending) < lookahead:
                    try:
                        src = next(source_iter)
                    except StopIteration:
                        return
                    job = None if _is_video(src) else pool.submit(self._prepare, src, loader, opts)
                    pending.append((src, job))

            fill()
            batch: list[_Item] = []
            n_inputs = 0
            while pending:
                src, job = pending.popleft()
                fill()
                if job is None:
                    yield from self._finish(batch, opts)
                    batch, n_inputs = [], 0
                    yield self._video_or_failure(str(src), opts, sampling, batch_size, video_progress)
                    continue
                item = job.result()
                batch.append(item)
                n_inputs += len(item.analysed.model_inputs()) if item.analysed else 0
                if n_inputs >= batch_size or not pending:
                    yield from self._finish(batch, opts)
                    batch, n_inputs = [], 0
            yield from self._finish(batch, opts)

    def _finish(self, batch: list[_Item], opts: Options) -> Iterator[Prediction]:
        inputs = [x for item in batch if item.analysed for x in item.analysed.model_inputs()]
        started = time.perf_counter()
        scores = self._p_fake(inputs)
        per_input = (time.perf_counter() - started) / max(len(inputs), 1)
        offset = 0
        for item in batch:
            if item.analysed is None:
                yield Prediction.failed(
                    source_name(item.source), item.error or "unknown error", item.seconds, self.name
                )
                continue
            n = len(item.analysed.model_inputs())
            p = self._apply_scores(item.analysed, scores[offset : offset + n], opts, source_name(item.source))
            offset += n
            yield self._image_prediction(item, p, item.seconds + per_input * n, opts)

    # ------------------------------------------------------------------ videos

    def _video_or_failure(
        self, path: str, opts: Options, sampling: FrameSampling, batch_size: int, progress: VideoProgress | None
    ) -> Prediction:
        started = time.perf_counter()
        try:
            return judge_video(self, path, opts, sampling, batch_size, progress)
        except DeepfakeDetectorError as exc:
            return Prediction.failed(path, str(exc), time.perf_counter() - started, self.name, kind="video")
        except Exception as exc:  # noqa: BLE001 - a folder run must go on past any bad file
            return Prediction.failed(
                path,
                f"{path}: unexpected error while reading ({type(exc).__name__}: {exc})",
                time.perf_counter() - started,
                self.name,
                kind="video",
            )

    def summary(self) -> dict[str, Any]:
        """A flat description for reports and the ``About`` panels of front ends.

        ``trained_on`` describes the training data, ``terms`` the terms of use it came with
        (``None`` when not recorded); ``runtime`` what runs the network. For an ensemble, ``arch`` is ``"ensemble"``,
        ``input_size`` is ``None`` unless all members share one, ``members`` describes each
        member and ``combine`` names the rule; the threshold and validation score are the
        ensemble's own, from ``ensemble.json``.
        """
        validation = self.config.metrics.get("validation", {})
        crop = self.preprocessing.crop
        summary = {
            "name": self.name,
            "arch": self.config.arch if isinstance(self.config, BundleConfig) else "ensemble",
            "input_size": self.preprocessing.input_size,
            "threshold": self.config.threshold,
            "input": "face crops" if crop is not None else "whole images",
            "runtime": self.runtime,
            "trained_on": "; ".join(dict.fromkeys(_trained_on(m.config) for m in self.members)),
            "terms": "; ".join(dict.fromkeys(t for m in self.members if (t := m.config.training.get("terms")))) or None,
            "validation_roc_auc_score": validation.get("roc_auc_score"),
        }
        if isinstance(self.config, EnsembleConfig):
            sizes = {m.config.preprocessing.input_size for m in self.members}
            summary["input_size"] = sizes.pop() if len(sizes) == 1 else None
            summary["combine"] = self.config.combine
            summary["combined_on"] = self.config.training.get("val_data", "unknown")
            summary["members"] = [
                f"{m.name} ({m.config.arch}, {m.config.preprocessing.input_size} px)" for m in self.members
            ]
        return summary


def _trained_on(config: BundleConfig) -> str:
    """What a bundle was trained on, for summaries: the bundle's own description
    (``training.trained_on``) when it has one, since a data path means nothing to a reader
    elsewhere; else that path (or the file it was imported from)."""
    training = config.training
    return str(training.get("trained_on") or training.get("data", training.get("imported_from", "unknown")))


def reencoded_copies(pixels: np.ndarray, reencode: Reencode) -> list[np.ndarray]:
    """The copies of ``HxWx3`` uint8 ``pixels`` a verdict must survive, in ``reencode.names``
    order: JPEG-encoded and decoded at each quality, then shrunk by each scale and enlarged
    back to the same size (bilinear), as uploads are laundered. A picture whose longer side
    exceeds REENCODE_MAX_SIDE is shrunk to it first (bilinear), so its copies are that size."""
    picture = Image.fromarray(np.ascontiguousarray(pixels))
    if max(picture.size) > REENCODE_MAX_SIDE:
        factor = REENCODE_MAX_SIDE / max(picture.size)
        shrunk = (max(1, round(picture.width * factor)), max(1, round(picture.height * factor)))
        picture = picture.resize(shrunk, Image.Resampling.BILINEAR, reducing_gap=3.0)
        pixels = np.asarray(picture)
    copies = [load_image(encode_jpeg(pixels, q), name="<re-encoded copy>") for q in reencode.jpeg_qualities]
    width, height = picture.size
    for scale in reencode.scales:
        small = picture.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BILINEAR)
        copies.append(np.asarray(small.resize((width, height), Image.Resampling.BILINEAR)))
    return copies


def _may_use_onnx(bundle_dir: Path) -> bool:
    """Whether ``runtime="auto"`` should try onnxruntime: it is installed, and the bundle (or
    every member of an ensemble) holds an ONNX export; whether each is current, load_onnx checks."""
    from .ensemble import read_ensemble
    from .export import find_onnx

    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        reraise_interrupt(exc)
        return False
    if not is_ensemble(bundle_dir):
        return find_onnx(bundle_dir) is not None
    try:
        names = read_ensemble(bundle_dir).members
    except BundleError:
        return False  # loading with torch will say what is wrong with it
    return all(find_onnx(bundle_dir / name) is not None for name in names)


def _is_video(source: Any) -> bool:
    return isinstance(source, (str, os.PathLike)) and is_video_path(source)
