"""Label results again at another threshold, without running the model again.

``p_fake`` does not depend on the threshold, so a front end that lets a person move it (the
web page's slider) keeps the Predictions it got and relabels them here, by the rule the
Detector itself uses (:func:`~deepfake_detector.threshold.label_for`).
"""

from __future__ import annotations

import copy

from .errors import InvalidArgumentError
from .results import FaceResult, Prediction
from .threshold import check_band, confidence_for, label_for


def relabel(prediction: Prediction, threshold: float, band: float = 0.0) -> Prediction:
    """A copy of ``prediction`` labelled at ``threshold`` with the uncertain ``band``: the
    verdict, its confidence, every face, and a video's tracks, timeline and kept frames.

    At the threshold it was made with, ``prediction`` itself comes back unchanged: the
    re-encoding check (see :meth:`~deepfake_detector.detector.Detector.predict`) needs the
    re-encoded copies' scores, which a Prediction does not keep, so only that original
    labelling includes it; at any other threshold the band alone marks a verdict uncertain.
    Kept pixels are shared with ``prediction``, not copied.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise InvalidArgumentError(f"The 'threshold' parameter must be a float in [0, 1]; got {threshold!r}.")
    band = check_band(band)
    if prediction.threshold is not None and float(threshold) == prediction.threshold:
        return prediction
    pixels = {id(image): image for _, image, _ in prediction.artifacts.images} if prediction.artifacts else {}
    out = copy.deepcopy(prediction, pixels)
    out.threshold = float(threshold)
    if out.p_fake is not None:
        out.label = label_for(out.p_fake, threshold, band)
        out.confidence = float(confidence_for(out.p_fake, threshold))
    faces: list[FaceResult] = list(out.faces)
    if out.video is not None:
        faces.extend(face for frame in out.video.timeline for face in frame.faces)
        for track in out.video.tracks:
            if track.p_fake is not None:
                track.label = label_for(track.p_fake, threshold, band)
    if out.artifacts is not None:
        faces.extend(face for _, _, kept in out.artifacts.images for face in kept)
    for face in faces:
        if face.p_fake is not None:
            face.label = label_for(face.p_fake, threshold, band)
    return out
