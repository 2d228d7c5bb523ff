"""The REST service: ``create_app()`` builds a FastAPI app over one shared :class:`Detector`.

The app is thin (see docs/architecture.md): it checks limits, hands the upload's bytes to the
core's decoders, calls the Detector and returns :meth:`Prediction.to_dict`. Everything else
follows from three choices:

* The detector is built once and shared. Passed in, it serves at once; otherwise the
  lifespan loads it in a worker thread while the server already answers ``/healthz``, and
  ``/readyz`` says 503 until it is there. Decoding and model work run in the thread pool,
  never on the event loop, so one slow video does not stall other clients. The images of
  requests that arrive together share the model's forward passes (:mod:`.batching`).
* Size limits hold before the data are in memory or on disk: the whole request body is
  capped by :class:`_BodyLimit`, which refuses on ``Content-Length`` and counts the bytes
  of streamed bodies as they arrive; pixel counts are checked from image and video
  headers before anything is decoded.
* Every error is one JSON shape (:class:`~.schemas.ErrorResponse`). The core's typed errors
  map to statuses in one table; anything unexpected becomes a 500 with an id that matches
  the server's log entry, never a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import shutil
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..detector import Detector
from ..errors import (
    DeepfakeDetectorError,
    InvalidArgumentError,
    MediaError,
    MediaNotFoundError,
    MediaTooLargeError,
    UnknownLayerError,
)
from ..explain import Explainer
from ..media.image import load_image
from ..media.video import VIDEO_SUFFIXES, FrameSampling, probe_video
from ..results import Prediction
from .batching import RequestBatcher
from .schemas import ErrorResponse, ModelsResponse, PredictionModel, PredictResponse, Status

log = logging.getLogger("deepfake_detector.service")

MIB = 1024 * 1024
DEFAULT_MAX_UPLOAD_BYTES = 50 * MIB
DEFAULT_MAX_PIXELS = 40_000_000  # a 40-megapixel photo decodes to 120 MB of RGB: enough for cameras, not for bombs
DEFAULT_MAX_FILES = 32
_COPY_CHUNK = MIB

FacesOption = Literal["auto", "off", "only"]
AggregateOption = Literal["max", "mean"]

# The one table from the core's typed errors to HTTP: the first class in an error's MRO wins;
# any other DeepfakeDetectorError is a 422, and a 500 here is answered as an unexpected error.
_ERROR_STATUS: dict[type[DeepfakeDetectorError], tuple[int, str]] = {
    MediaTooLargeError: (413, "too_large"),
    MediaNotFoundError: (500, "internal_error"),  # the service names no paths; a missing file is our fault
    MediaError: (415, "unsupported_media"),  # empty, not an image/video, truncated or damaged
    InvalidArgumentError: (422, "invalid_option"),
    UnknownLayerError: (501, "explain_unavailable"),  # a model served from an ONNX export alone has no layers
}


@dataclass(frozen=True)
class ServiceSettings:
    """Limits and the model choice of one app; fixed when the app is built."""

    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_files: int = DEFAULT_MAX_FILES
    model_dir: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_pixels", "max_files"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(
                    f"The {name!r} setting of the service must be a positive integer; got {value!r}."
                )


class ServiceNotReady(Exception):
    """The detector is still loading (or failed to load): answered with 503."""


def create_app(
    detector: Detector | None = None,
    *,
    model_dir: str | Path | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_files: int = DEFAULT_MAX_FILES,
) -> FastAPI:
    """A new app serving ``detector``, or, when it is None, the bundle in ``model_dir``
    (default: the shipped detector), loaded in the background at startup.

    ``max_upload_bytes`` caps a whole request body (files and multipart framing),
    ``max_pixels`` each image or video frame, ``max_files`` the images of one request.
    A factory rather than a module-level app, so each test, and ``uvicorn --factory``,
    gets a fresh one with its own settings.
    """
    settings = ServiceSettings(
        max_upload_bytes=max_upload_bytes,
        max_pixels=max_pixels,
        max_files=max_files,
        model_dir=None if model_dir is None else str(model_dir),
    )
    app = FastAPI(
        title="deepfake-detector",
        version=__version__,
        description="Tell whether a picture or video of a person is real or fake. "
        "`p_fake` is always the probability that the input is fake.",
        lifespan=_lifespan,
        form_limits={"max_files": settings.max_files, "max_fields": 16},
        responses={
            413: {"model": ErrorResponse, "description": "upload or image too large"},
            415: {"model": ErrorResponse, "description": "not an image (or video) the detector reads"},
            422: {"model": ErrorResponse, "description": "bad options"},
            501: {"model": ErrorResponse, "description": "heat maps asked of a model served without its layers"},
            503: {"model": ErrorResponse, "description": "the model is not loaded yet"},
        },
    )
    app.add_middleware(_BodyLimit, max_bytes=settings.max_upload_bytes)
    app.state.settings = settings
    app.state.detector = detector
    app.state.load_error = None
    app.state.explainer = None
    app.state.batcher = RequestBatcher()
    app.state.explainer_lock = threading.Lock()
    app.add_exception_handler(DeepfakeDetectorError, _core_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ServiceNotReady, _not_ready)
    app.add_exception_handler(Exception, _unexpected_error)
    _add_routes(app)
    return app


class _BodyLimit:
    """Cap a request body at ``max_bytes`` before it is parsed, spooled or held in memory.

    A declared ``Content-Length`` over the limit is refused before any byte is read; a body
    that arrives without one (chunked) is counted as it streams in, and reading stops with a
    413 at the first byte over. (FastAPI's own ``max_body_size`` does the same, but answers
    a declared-too-large body in plain text, outside this app's error handlers.)
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _error(413, "too_large", _too_large(self.max_bytes))(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise StarletteHTTPException(413)  # answered by _http_error, like any HTTP error
            return message

        await self.app(scope, counted, send)


# ---------------------------------------------------------------------- lifecycle


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the detector in the background when none was given, so that the server
    answers liveness checks (and says 'not ready') while the weights load."""
    task = None if app.state.detector is not None else asyncio.create_task(_load_detector(app))
    yield
    await app.state.batcher.close()
    if task is not None:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def _load_detector(app: FastAPI) -> None:
    settings: ServiceSettings = app.state.settings
    try:
        app.state.detector = await run_in_threadpool(Detector.load, settings.model_dir)
    except Exception as exc:  # noqa: BLE001 - reported by /readyz and logged; the server stays up
        log.exception("the model could not be loaded")
        app.state.load_error = f"{type(exc).__name__}: {exc}"
    else:
        log.info("model %s loaded", app.state.detector.name)


def get_detector(request: Request) -> Detector:
    """The shared detector; a dependency, so tests may override it."""
    detector: Detector | None = request.app.state.detector
    if detector is None:
        raise ServiceNotReady(request.app.state.load_error or "the model is still loading")
    return detector


def get_settings(request: Request) -> ServiceSettings:
    """The app's limits; a dependency, so tests may override it."""
    return request.app.state.settings


# ---------------------------------------------------------------------- routes


def _add_routes(app: FastAPI) -> None:
    @app.get("/healthz", response_model=Status, tags=["status"])
    async def healthz() -> dict[str, str]:
        """The process is up (says nothing about the model)."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=Status, tags=["status"])
    async def readyz(detector: Annotated[Detector, Depends(get_detector)]) -> dict[str, str]:
        """The model is loaded: predictions will be answered (503 until then)."""
        return {"status": "ready"}

    @app.get("/v1/models", response_model=ModelsResponse, tags=["models"])
    async def models(detector: Annotated[Detector, Depends(get_detector)]) -> dict[str, Any]:
        """The detector this service judges with: name, architecture, threshold, training data."""
        return {"models": [detector.summary()]}

    @app.post("/v1/predict", response_model=PredictResponse, tags=["predict"])
    async def predict_images(
        request: Request,
        file: Annotated[list[UploadFile], File(description="one or more images; repeat the field for several")],
        detector: Annotated[Detector, Depends(get_detector)],
        settings: Annotated[ServiceSettings, Depends(get_settings)],
        faces: Annotated[FacesOption, Query(description="judge faces (auto: as the model was trained)")] = "auto",
        threshold: Annotated[float | None, Query(ge=0.0, le=1.0, description="default: the model's")] = None,
        aggregate: Annotated[AggregateOption, Query(description="how face scores make the image's")] = "max",
        uncertain_band: Annotated[
            float | None, Query(ge=0.0, lt=0.5, description="'uncertain' within this of the threshold")
        ] = None,
        reencode_check: Annotated[
            bool | None, Query(description="'uncertain' when re-encoded copies flip the verdict (default: model's)")
        ] = None,
        explain: Annotated[
            bool, Query(description="add a Grad-CAM heat map of each judged face (or the whole image)")
        ] = False,
    ) -> dict[str, Any]:
        """Judge images (JPEG, PNG, WebP, BMP, TIFF, GIF). The whole request fails with the
        first unreadable file, named in the error, so a client never has to match partial
        results to its uploads. With ``explain=true`` each prediction carries ``heat_maps``."""
        names = [upload.filename or f"file{i}" for i, upload in enumerate(file)]
        options = {
            "faces": faces,
            "threshold": threshold,
            "aggregate": aggregate,
            "uncertain_band": uncertain_band,
            "reencode_check": reencode_check,
        }
        if explain:
            explainer = await run_in_threadpool(_explainer, request.app, detector)
            predictions = await run_in_threadpool(_judge_keeping_pixels, detector, file, names, settings, options)
            heat_maps = await run_in_threadpool(lambda: [_heat_maps(explainer, p) for p in predictions])
        else:
            images = await run_in_threadpool(_decode_all, file, names, settings, detector.decode_size(faces))
            predictions = await request.app.state.batcher.predict(detector, images, options)
            heat_maps = [None] * len(predictions)
        return {
            "predictions": [
                {**_as_dict(p, name), "heat_maps": maps} for p, name, maps in zip(predictions, names, heat_maps)
            ]
        }

    @app.post("/v1/predict/video", response_model=PredictionModel, tags=["predict"])
    async def predict_video(
        file: Annotated[UploadFile, File(description="one video (MP4, MOV, MKV, WebM, AVI)")],
        detector: Annotated[Detector, Depends(get_detector)],
        settings: Annotated[ServiceSettings, Depends(get_settings)],
        faces: Annotated[FacesOption, Query(description="judge faces (auto: as the model was trained)")] = "auto",
        threshold: Annotated[float | None, Query(ge=0.0, le=1.0, description="default: the model's")] = None,
        aggregate: Annotated[AggregateOption, Query(description="how face scores make a frame's")] = "max",
        max_frames: Annotated[int, Query(ge=1, le=256, description="frames sampled evenly over the video")] = 32,
    ) -> dict[str, Any]:
        """Judge one video on frames sampled evenly over it. The upload is copied to a
        temporary file (video decoders need a file) that is deleted when the answer is ready."""
        name = file.filename or "video"
        suffix = Path(name).suffix.lower()
        with tempfile.TemporaryDirectory(prefix="deepfake-detector-") as folder:
            path = Path(folder) / f"upload{suffix if suffix in VIDEO_SUFFIXES else '.mp4'}"
            await run_in_threadpool(_copy_upload, file, path)
            try:
                prediction = await run_in_threadpool(
                    _judge_video, detector, path, settings, faces, threshold, aggregate, max_frames
                )
            except MediaError as exc:  # name the upload, not our temporary file
                raise type(exc)(name, exc.reason) from None
        return _as_dict(prediction, name)


def _judge_keeping_pixels(
    detector: Detector,
    uploads: list[UploadFile],
    names: list[str],
    settings: ServiceSettings,
    options: dict[str, Any],
) -> list[Prediction]:
    """Decode and judge the uploads keeping the pixels, which the heat maps are drawn on."""
    images = _decode_all(uploads, names, settings, detector.decode_size(options["faces"]))
    return list(detector.predict_many(images, keep_media=True, **options))


def _explainer(app: FastAPI, detector: Detector) -> Explainer:
    """The app's Grad-CAM explainer, made on first use (it loads the PyTorch network) and shared."""
    with app.state.explainer_lock:
        if app.state.explainer is None:
            app.state.explainer = Explainer.for_detector(detector)
        return app.state.explainer


def _heat_maps(explainer: Explainer, prediction: Prediction) -> list[dict[str, Any]]:
    """The heat maps of one image's judged regions, each laid over its region as a base64 PNG."""
    if not prediction.ok or prediction.artifacts is None:
        return []
    maps = []
    for _, explanation in explainer.explain_prediction(prediction):
        for heat in explanation.heat_maps:
            buffer = io.BytesIO()
            heat.overlay().save(buffer, format="PNG")
            maps.append(
                {
                    "name": heat.name,
                    "region": [int(v) for v in heat.region],
                    "p_fake": heat.p_fake,
                    "png": base64.b64encode(buffer.getvalue()).decode("ascii"),
                }
            )
    prediction.artifacts = None  # the pixels are no longer needed
    return maps


def _decode_all(
    uploads: list[UploadFile], names: list[str], settings: ServiceSettings, min_side: int | None
) -> list[np.ndarray]:
    """Every upload decoded, in order; the first unreadable one raises, naming it."""
    return [_decode(upload, name, settings, min_side) for upload, name in zip(uploads, names)]


def _decode(upload: UploadFile, name: str, settings: ServiceSettings, min_side: int | None) -> np.ndarray:
    """One upload as an RGB array, through the core's decoder and the app's pixel limit
    (at reduced scale down to ``min_side``, as the library decodes for the same options).

    The spooled upload is at most ``max_upload_bytes`` (the body limit saw to that), so
    reading it whole is bounded."""
    upload.file.seek(0)
    return load_image(upload.file.read(), max_pixels=settings.max_pixels, name=name, min_side=min_side)


def _copy_upload(upload: UploadFile, path: Path) -> None:
    """Copy a spooled upload to ``path`` in chunks, never holding it whole in memory."""
    upload.file.seek(0)
    with open(path, "wb") as out:
        shutil.copyfileobj(upload.file, out, _COPY_CHUNK)


def _judge_video(
    detector: Detector,
    path: Path,
    settings: ServiceSettings,
    faces: str,
    threshold: float | None,
    aggregate: str,
    max_frames: int,
) -> Prediction:
    """Refuse frames over the pixel limit from the header, then judge the video."""
    probe_video(path, max_pixels=settings.max_pixels)
    return detector.predict(
        path, faces=faces, threshold=threshold, aggregate=aggregate, sampling=FrameSampling(max_frames=max_frames)
    )


def _as_dict(prediction: Prediction, name: str) -> dict[str, Any]:
    """The library's result dict, named after the upload."""
    prediction.path = name
    if prediction.error is not None:  # a failure names the server's copy; the client knows its file by name
        prediction.error = f"{name}: {prediction.error.split(': ', 1)[-1]}"
    return prediction.to_dict()


# ---------------------------------------------------------------------- errors


def _error(status: int, type_: str, detail: str, **extra: Any) -> JSONResponse:
    body = ErrorResponse(type=type_, detail=detail, **extra)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status)


async def _core_error(request: Request, exc: Exception) -> JSONResponse:
    """A typed error of the core: its message names the file and the reason."""
    for cls in type(exc).__mro__:
        if cls in _ERROR_STATUS:
            status, type_ = _ERROR_STATUS[cls]
            break
    else:
        status, type_ = 422, "invalid_request"
    if status == 500:
        return await _unexpected_error(request, exc)
    return _error(status, type_, str(exc))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """Bad options or a missing file: 422 listing each field, without echoing the input."""
    assert isinstance(exc, RequestValidationError)
    fields = [{"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in exc.errors()]
    detail = "; ".join(f"{'.'.join(f['loc'])}: {f['msg']}" for f in fields) or "invalid request"
    return _error(422, "invalid_request", detail, fields=fields)


_HTTP_TYPES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Routing and protocol errors (404, 405, unparsable bodies, the body limit's 413)."""
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail
    if exc.status_code == 413:
        detail = _too_large(request.app.state.settings.max_upload_bytes)
    elif exc.status_code == 400 and (reason := _multipart_reason(exc)):
        detail = f"{detail.rstrip('.')}: {reason}"
    response = _error(exc.status_code, _HTTP_TYPES.get(exc.status_code, "http_error"), str(detail))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def _multipart_reason(exc: BaseException) -> str | None:
    """What python-multipart found wrong in a body, from the exception chain behind Starlette's
    bare "Invalid multipart data."; its messages name the fault and an offset, and at most a
    single byte of the client's data. A header over its size limit most often comes from a
    very long file name."""
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        if type(cause).__module__.split(".")[0] in ("python_multipart", "multipart"):
            reason = str(cause).rstrip(".")
            if "header size" in reason.lower():
                reason += " (a part's headers, its file name among them, have a size limit)"
            return reason
        cause = cause.__cause__ or cause.__context__
    return None


def _too_large(limit: int) -> str:
    return f"the request body is over the limit of {limit:,} bytes"


async def _not_ready(request: Request, exc: Exception) -> JSONResponse:
    return _error(503, "not_ready", str(exc))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """Anything we did not foresee: logged in full here, only an id for the client."""
    error_id = uuid.uuid4().hex[:12]
    log.error("error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc)
    return _error(500, "internal_error", "internal error; quote this error_id to the operator", error_id=error_id)
