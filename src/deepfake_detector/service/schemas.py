"""Response models of the REST service: the library's result schema, as OpenAPI sees it.

The service returns :meth:`Prediction.to_dict` unchanged; these models only describe it, so
that ``/docs`` and generated clients know every field. They mirror
:mod:`deepfake_detector.results` field for field (a test checks this), and must change with it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Box(BaseModel):
    """A face box in pixels of the original image, rounded to 0.1 px."""

    x: float
    y: float
    w: float
    h: float


class Face(BaseModel):
    """One face (``FaceResult``); ``status="too_small"`` faces carry no score."""

    box: Box
    detector_score: float
    status: str = Field(description="'scored' or 'too_small'")
    p_fake: float | None = None
    label: str | None = None
    track: int | None = Field(None, description="video only: the person this face belongs to")


class Frame(BaseModel):
    """One sampled video frame (``FrameResult``)."""

    index: int
    time: float = Field(description="seconds from the first frame")
    p_fake: float | None
    faces: list[Face] = []


class Track(BaseModel):
    """One person followed across frames (``TrackResult``); track -1 is the whole frame."""

    track: int
    n_frames: int
    p_fake: float | None
    label: str | None
    first_time: float
    last_time: float


class Video(BaseModel):
    """What a video's verdict rests on (``VideoResult``)."""

    fps: float
    duration: float | None
    frames_sampled: int
    width: int
    height: int
    rotation: int
    sampling: dict[str, Any]
    rule: str
    tracks: list[Track] = []
    timeline: list[Frame] = []


class PredictionModel(BaseModel):
    """The verdict on one input (``Prediction.to_dict()``); ``p_fake`` is always P(fake)."""

    path: str | None = Field(description="the uploaded file's name")
    label: str | None = Field(description="'real', 'fake' or 'uncertain'; null when nothing could be judged")
    p_fake: float | None
    confidence: float | None
    seconds: float
    threshold: float | None = None
    model: str | None = None
    error: str | None = None
    kind: str = Field("image", description="'image' or 'video'")
    scored_on: str | None = Field(None, description="'faces', 'whole_image' or 'nothing'")
    note: str | None = None
    faces: list[Face] = []
    video: Video | None = None


class HeatMapModel(BaseModel):
    """A Grad-CAM heat map of one judged region (a face crop, or the whole image)."""

    name: str = Field(description="'face0', 'face1', ... (as in ``faces``, scored ones only) or 'image'")
    region: list[int] = Field(description="[x0, y0, x1, y1]: the part of the image the map covers, in its pixels")
    p_fake: float = Field(description="the network's score of that region in the pass that made the map")
    png: str = Field(description="base64 PNG: the region with the heat map laid over it (red: pushed p_fake up)")


class ExplainedPrediction(PredictionModel):
    """A prediction, with heat maps when ``explain=true`` was asked for (null otherwise)."""

    heat_maps: list[HeatMapModel] | None = None


class PredictResponse(BaseModel):
    """One prediction per uploaded image, in upload order."""

    predictions: list[ExplainedPrediction]


class ModelInfo(BaseModel):
    """The loaded detector, as ``Detector.summary()`` describes it."""

    name: str
    arch: str
    input_size: int | None
    threshold: float
    input: str = Field(description="'face crops' or 'whole images'")
    runtime: str = Field("torch", description="what runs the network: 'onnx' (onnxruntime) or 'torch'")
    trained_on: str
    terms: str | None = None
    validation_roc_auc_score: float | None = None
    combine: str | None = Field(None, description="ensembles only: how member scores combine")
    combined_on: str | None = None
    members: list[str] | None = None


class ModelsResponse(BaseModel):
    """The detectors this service answers with (today: the one it loaded)."""

    models: list[ModelInfo]


class Status(BaseModel):
    """A liveness or readiness answer."""

    status: str


class FieldError(BaseModel):
    """One rejected option: where it was (``["query", "threshold"]``) and why."""

    loc: list[str | int]
    msg: str


class ErrorResponse(BaseModel):
    """Every error the service answers with, whatever its status.

    ``type`` is a stable machine-readable code, ``detail`` a message for people that names
    the file or option at fault; ``error_id`` (500 only) matches the server's log entry.
    """

    type: str
    detail: str
    error_id: str | None = None
    fields: list[FieldError] | None = None
