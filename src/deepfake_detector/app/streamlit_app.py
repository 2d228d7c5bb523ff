"""The deepfake detector's web page: upload pictures or a video, read the verdict and why.

Run it with ``deepfake-detector app`` or ``streamlit run`` on this file. The page is thin:
the core judges (``Detector``), relabels (``relabel``) and explains (``Explainer``); the
page keeps each upload's raw result in ``st.session_state`` so the threshold slider and the
heat-map switch never run the model again, and it loads each model once per process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import streamlit as st

from deepfake_detector.annotate import draw_faces
from deepfake_detector.app import logic
from deepfake_detector.detector import Detector
from deepfake_detector.errors import DeepfakeDetectorError
from deepfake_detector.explain import Explainer, Explanation
from deepfake_detector.relabel import relabel
from deepfake_detector.results import LABEL_UNCERTAIN, FaceResult, Prediction

if TYPE_CHECKING:
    from streamlit.runtime.uploaded_file_manager import UploadedFile

PICTURE_WIDTH, MIN_PICTURE_WIDTH = 720, 320  # pixels on the page: small pictures grow, large ones shrink
THRESHOLD_HELP = "p_fake at or above this is called fake. Moving it relabels the results without running the model."
RESET_HELP = (
    "Back to the threshold the model was calibrated at. Only there do verdicts include the "
    "re-encoding check, which needs the model's own run."
)
EXPLAIN_HELP = (
    "Grad-CAM heat map: red areas pushed p_fake up the most. It is taken at the layer the model "
    "names for it, over each judged face (or the whole picture when no face was judged)."
)


@st.cache_resource(show_spinner="Loading the model…")
def load_detector(model_dir: str) -> Detector:
    """One Detector per model folder and process, shared by every visitor; per-visit choices
    (the threshold) are never set on it."""
    return Detector.load(model_dir)


@st.cache_resource(show_spinner="Preparing heat maps…")
def load_explainer(model_dir: str) -> Explainer:
    """One Explainer per model folder and process (it holds its own copy of the network)."""
    return Explainer.for_detector(load_detector(model_dir))


def choose_model(settings: logic.Settings) -> tuple[str, Detector] | None:
    """The model picker; shows an error and returns None when no model can be loaded."""
    try:
        models, shipped_missing = logic.find_models(settings.models_dir)
    except DeepfakeDetectorError as exc:
        st.error(str(exc))
        return None
    if not models:
        st.error(logic.NO_MODEL_MESSAGE.format(reason=shipped_missing))
        return None
    label = st.sidebar.selectbox("Model", list(models), key="model")
    try:
        return str(models[label]), load_detector(str(models[label]))
    except DeepfakeDetectorError as exc:
        st.error(f"This model cannot be used: {exc}")
        return None


def _set_threshold(key: str, value: float) -> None:
    """The reset button's callback: it runs before the next rerun draws the slider, the one
    moment Streamlit lets a widget's value be set."""
    st.session_state[key] = value


def choose_threshold(detector: Detector, model_dir: str) -> float:
    """The threshold slider, starting at the model's own threshold, and a button back to it.

    The slider moves in steps of 0.01, which cannot land on a calibrated threshold such as
    0.8392 again once moved; yet only at that exact value are the results the model's own,
    re-encoding check included (see :func:`~deepfake_detector.relabel.relabel`). The value
    lives in session state (set there first, so the slider takes no default of its own and
    the button's callback may change it).
    """
    key = f"threshold::{model_dir}"
    own = float(detector.threshold)
    st.session_state.setdefault(key, own)
    threshold = st.sidebar.slider("Threshold", 0.0, 1.0, step=0.01, format="%.4f", key=key, help=THRESHOLD_HELP)
    st.sidebar.button(
        f"Reset to the model's threshold ({own:.4f})",
        key=f"reset-threshold::{model_dir}",
        on_click=_set_threshold,
        args=(key, own),
        disabled=threshold == own,
        help=RESET_HELP,
    )
    if threshold != own and detector.config.reencode is not None:
        st.sidebar.caption("Off the model's threshold, the re-encoding check no longer marks verdicts uncertain.")
    return threshold


def render_about(detector: Detector) -> None:
    """The "About this model" panel, from the bundle's config."""
    with st.sidebar.expander("About this model"):
        facts = logic.model_facts(detector)
        scores = facts.pop("validation scores")
        st.markdown("\n".join(f"- **{key}**: {value}" for key, value in facts.items()))
        st.markdown("**Validation scores**")
        if isinstance(scores, dict):
            st.json(scores, expanded=1)
        else:
            st.write(scores)


def render_metrics(prediction: Prediction) -> None:
    """The prototype's three numbers, and what an uncertain or missing verdict means."""
    verdict, confidence, seconds = st.columns(3)
    verdict.metric("Prediction", logic.verdict_text(prediction))
    confidence.metric("Confidence", logic.confidence_text(prediction))
    seconds.metric("Processing time", logic.seconds_text(prediction))
    if prediction.p_fake is not None:
        st.caption(f"p_fake {prediction.p_fake:.4f} at threshold {prediction.threshold:.4f}")
    if prediction.label == LABEL_UNCERTAIN:
        st.warning("Uncertain: the score is too close to the threshold (or too fragile) to call real or fake.")
    if prediction.note:
        st.info(prediction.note)


def explanations_of(judged: logic.Judged, model_dir: str) -> list[tuple[str, Explanation]] | None:
    """The upload's heat maps, made on first request and kept.

    On any failure, None and a message naming the upload: a heat map is an extra, so its
    failure must neither take the verdict off the page nor show a traceback.
    """
    if judged.explanations is None:
        name = judged.prediction.path or "this upload"
        try:
            with st.spinner("Computing heat maps…"):
                judged.explanations = load_explainer(model_dir).explain_prediction(judged.prediction)
        except DeepfakeDetectorError as exc:
            st.error(logic.plain_text(f"No heat map for {name}: {exc}"))
            return None
        except Exception as exc:  # noqa: BLE001 - the page shows a message, never a traceback
            st.error(logic.plain_text(f"No heat map for {name}: unexpected error ({type(exc).__name__}: {exc})"))
            return None
    return judged.explanations


def render_picture(name: str, image: np.ndarray, faces: list[FaceResult], explanation: Explanation | None) -> None:
    """One picture with its face boxes and verdicts, under its heat map when one is given."""
    shown = image if explanation is None else np.asarray(explanation.overlay())
    width = min(PICTURE_WIDTH, max(MIN_PICTURE_WIDTH, image.shape[1]))
    picture = logic.page_picture(np.asarray(draw_faces(shown, faces)), width)
    st.image(picture, caption=name, width=picture.shape[1])
    if explanation is None:
        return
    if not explanation.heat_maps or explanation.image_map().max() == 0:
        st.caption(f"No area pushed p_fake up at layer {explanation.layer}: nothing here looked fake to the model.")
    faces_with_maps = [heat for heat in explanation.heat_maps if heat.face is not None]
    for column, heat in zip(st.columns(max(1, min(4, len(faces_with_maps)))), faces_with_maps):
        column.image(heat.overlay(), caption=f"{heat.name}: p_fake {heat.p_fake:.2f}", width="stretch")


def render_result(judged: logic.Judged, prediction: Prediction, model_dir: str, show_heat: bool) -> None:
    """The full view of one upload: metrics, then the picture(s) or the video's timeline."""
    if not prediction.ok:
        st.error(logic.plain_text(prediction.error or "not judged"))
        return
    render_metrics(prediction)
    explanations = explanations_of(judged, model_dir) if show_heat else None
    by_name = dict(explanations or [])
    if show_heat and explanations is not None:
        st.caption(EXPLAIN_HELP)
    if prediction.video is not None:
        st.subheader("Frame scores over time")
        st.line_chart(logic.timeline_frame(prediction.video, prediction.threshold or 0.5))
        st.caption(f"{prediction.video.frames_sampled} frames sampled; the flat line is the threshold.")
        if prediction.artifacts is not None and prediction.artifacts.images:
            st.subheader("Most suspicious frames")
    pictures = prediction.artifacts.images if prediction.artifacts is not None else []
    slots = st.columns(len(pictures)) if prediction.video is not None and pictures else [st.container()] * len(pictures)
    for slot, (name, image, faces) in zip(slots, pictures):
        with slot:
            render_picture(
                prediction.path if name == "image" and prediction.path else name, image, faces, by_name.get(name)
            )


def judge_new_uploads(
    files: list[UploadedFile], detector: Detector, model_dir: str, max_bytes: int
) -> list[logic.Judged]:
    """Each upload's raw result, from session state when this model already judged it."""
    store: dict[str, logic.Judged] = st.session_state.setdefault("judged", {})
    keys = [f"{model_dir}::{f.file_id}" for f in files]
    for stale in set(store) - set(keys):
        del store[stale]
    todo = [(key, f) for key, f in zip(keys, files) if key not in store]
    if todo:
        progress = st.progress(0.0, text="Judging…")
        for done, (key, upload) in enumerate(todo, start=1):
            store[key] = logic.judge_upload(detector, upload.name, upload.getvalue(), max_bytes)
            progress.progress(done / len(todo), text=f"Judged {done} of {len(todo)}")
        progress.empty()
    return [store[key] for key in keys]


def render_table(predictions: list[Prediction]) -> None:
    """Several uploads: one row each, and the results to download."""
    st.dataframe(logic.table_rows(predictions), hide_index=True, width="stretch")
    csv_column, json_column = st.columns(2)
    csv_column.download_button("Download CSV", logic.csv_bytes(predictions), "results.csv", "text/csv", key="csv")
    json_column.download_button(
        "Download JSON", logic.json_bytes(predictions), "results.json", "application/json", key="json"
    )
    failed = sum(not p.ok for p in predictions)
    if failed:  # each file's message is in its note and, whole, in its details below
        st.warning(f"{failed} of {len(predictions)} files could not be judged: the note column says why.")


def main() -> None:
    """The page, top to bottom; Streamlit runs it again on every interaction."""
    st.set_page_config(page_title="Deepfake detector", layout="wide")
    st.title("Deepfake detector")
    st.write("Is this picture of a person real or fake? Upload images or a video to find out.")
    settings = logic.Settings.from_env()
    chosen = choose_model(settings)
    if chosen is None:
        return
    model_dir, detector = chosen
    threshold = choose_threshold(detector, model_dir)
    band = float(detector.config.uncertain.get("band", 0.0))
    show_heat = st.sidebar.toggle("Show Grad-CAM heat maps", key="gradcam", help=EXPLAIN_HELP)
    render_about(detector)
    files = st.file_uploader(
        "Images (JPG, PNG, WebP, BMP, TIFF, GIF) or videos (MP4, MOV, AVI, MKV, WebM)",
        type=logic.UPLOAD_TYPES,
        accept_multiple_files=True,
        key="uploads",
        max_upload_size=settings.max_upload_mb,
    )
    if not files:
        st.info("Drag and drop files above, or browse for them.")
        return
    judged = judge_new_uploads(files, detector, model_dir, settings.max_upload_bytes)
    predictions = [relabel(j.prediction, threshold, band) for j in judged]
    if len(judged) == 1:
        render_result(judged[0], predictions[0], model_dir, show_heat)
        return
    render_table(predictions)
    names = [f"{i + 1}. {p.path or 'file'}" for i, p in enumerate(predictions)]  # unique: two uploads may share a name
    pick = st.selectbox("Details for", range(len(names)), format_func=names.__getitem__, key="details")
    render_result(judged[pick], predictions[pick], model_dir, show_heat)


main()
