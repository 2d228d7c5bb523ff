"""The ensemble format: a folder with ``ensemble.json`` and one bundle folder per member.

An ensemble judges like one bundle: every member scores the same face crop (or whole
image), each after its own preprocessing (input size, mean and std, interpolation), and
``ensemble.json`` says how the members' ``p_fake`` combine into one, which threshold and
uncertain rule apply to the combined score, and how well it did on the validation data
the combination was fitted on. Faces are found and cropped once for all members, so the
members must share the face crop and the face detector.

Combination rules (``combine``):

* ``"mean"``: the mean of the members' ``p_fake``;
* ``"logistic"``: ``sigmoid(intercept + sum_k coefficients[k] * logit(p_k))``, each ``p_k``
  clipped to ``[LOGIT_EPS, 1 - LOGIT_EPS]`` first, as a float32 sigmoid reaches 0 and 1.

Either way the result is a probability of fake, so ``p_fake`` means what it means for a
bundle. Writing is atomic, as for bundles: a temporary folder beside the target gets the
members' bundle files and ``ensemble.json``, then is renamed into place.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePath
from typing import Any, Callable, Sequence

import numpy as np
from torch import nn

from .bundle import CONFIG_FILE, WEIGHTS_FILE, BundleConfig, load_bundle, replace_folder
from .checks import is_finite
from .errors import BundleError, DeepfakeDetectorError, InvalidArgumentError
from .faces.crop import CropSpec
from .threshold import Reencode, check_reencode, check_uncertain

FORMAT_VERSION = 1
ENSEMBLE_FILE = "ensemble.json"
COMBINE_MODES = ("mean", "logistic")
LOGIT_EPS = 1e-6


def clipped_logit(p: np.ndarray) -> np.ndarray:
    """Log-odds of ``p`` (float64) after clipping to ``[LOGIT_EPS, 1 - LOGIT_EPS]``: the inputs
    of the logistic combination, finite even where a member's sigmoid saturated."""
    p = np.clip(np.asarray(p, dtype=np.float64), LOGIT_EPS, 1.0 - LOGIT_EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-z))`` without overflow for large ``|z|``."""
    return np.exp(-np.logaddexp(0.0, -z))


@dataclass
class EnsembleConfig:
    """Contents of ``ensemble.json``.

    ``members`` are the member bundles' folder names inside the ensemble folder, in the
    order ``coefficients`` follow; ``coefficients`` and ``intercept`` are set exactly when
    ``combine`` is ``"logistic"``. ``threshold``, ``uncertain`` (``band`` and
    ``reencode``), ``name``, ``training`` and ``metrics`` mean what they mean in a bundle's
    config, for the combined ``p_fake``.
    """

    members: list[str]
    combine: str = "mean"
    coefficients: list[float] | None = None
    intercept: float | None = None
    threshold: float = 0.5
    uncertain: dict[str, Any] = field(default_factory=lambda: {"band": 0.0})
    name: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.members, list) or not self.members:
            raise BundleError(f"members must be a non-empty list of member folder names; got {self.members!r}.")
        for member in self.members:
            if not _is_folder_name(member):
                raise BundleError(f"members must be folder names inside the ensemble folder; got {member!r}.")
        if len(set(self.members)) != len(self.members):
            raise BundleError(f"members must not repeat a folder; got {self.members!r}.")
        if self.combine not in COMBINE_MODES:
            raise BundleError(f"combine must be one of {COMBINE_MODES}; got {self.combine!r}.")
        if self.combine == "logistic":
            coefficients = self.coefficients
            if not isinstance(coefficients, list) or not all(is_finite(c) for c in coefficients):
                raise BundleError(f"combine 'logistic' needs coefficients, a list of numbers; got {coefficients!r}.")
            if len(coefficients) != len(self.members):
                raise BundleError(
                    f"combine 'logistic' needs one coefficient per member: {len(self.members)} member(s) "
                    f"but {len(coefficients)} coefficient(s)."
                )
            if not is_finite(self.intercept):
                raise BundleError(f"combine 'logistic' needs an intercept, a number; got {self.intercept!r}.")
            self.coefficients = [float(c) for c in coefficients]
            self.intercept = float(self.intercept)  # type: ignore[arg-type]
        elif self.coefficients is not None or self.intercept is not None:
            raise BundleError("coefficients and intercept belong to combine 'logistic'; set them to null for 'mean'.")
        if not is_finite(self.threshold) or not 0.0 <= self.threshold <= 1.0:
            raise BundleError(f"threshold must be a number in [0, 1]; got {self.threshold!r}.")
        self.threshold = float(self.threshold)
        try:
            check_uncertain(self.uncertain)
        except DeepfakeDetectorError as exc:
            raise BundleError(f"uncertain: {exc}") from exc
        if not isinstance(self.name, str):
            raise BundleError(f"name must be a string; got {self.name!r}.")
        for key in ("training", "metrics"):
            if not isinstance(getattr(self, key), dict):
                raise BundleError(f"{key} must be an object; got {getattr(self, key)!r}.")

    @property
    def reencode(self) -> Reencode | None:
        """The re-encoded copies a verdict must survive, as for a bundle (null: no check)."""
        return check_reencode(self.uncertain.get("reencode"))

    def combine_scores(self, member_p_fake: np.ndarray) -> np.ndarray:
        """The ensemble's ``p_fake`` (float64) from a ``members x inputs`` array of the members'."""
        p = np.asarray(member_p_fake, dtype=np.float64)
        if p.ndim != 2 or p.shape[0] != len(self.members):
            raise InvalidArgumentError(
                f"combine_scores takes one row of scores per member ({len(self.members)}); got shape {p.shape}."
            )
        if self.combine == "mean":
            return p.mean(axis=0)
        assert self.coefficients is not None and self.intercept is not None
        return _sigmoid(self.intercept + np.asarray(self.coefficients) @ clipped_logit(p))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``ensemble.json``, its format version first."""
        d = asdict(self)
        return {"format_version": d.pop("format_version"), **d}

    @classmethod
    def from_dict(cls, d: Any, source: str = ENSEMBLE_FILE) -> EnsembleConfig:
        if not isinstance(d, dict):
            raise BundleError(f"{source}: expected a JSON object.")
        version = d.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or isinstance(version, bool):
            raise BundleError(f"{source}: format_version must be an integer; got {version!r}.")
        if version > FORMAT_VERSION:
            raise BundleError(
                f"{source}: ensemble format {version} is newer than this version of deepfake-detector "
                f"understands ({FORMAT_VERSION}); upgrade the package."
            )
        if "members" not in d:
            raise BundleError(f"{source}: missing required key 'members'.")
        try:
            return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
        except BundleError as exc:
            raise BundleError(f"{source}: {exc}") from exc


def _is_folder_name(name: Any) -> bool:
    """A plain folder name: no path separators, nothing that climbs out of the ensemble."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..", ENSEMBLE_FILE)
        and "\\" not in name
        and PurePath(name).name == name
    )


@dataclass(frozen=True, eq=False)
class Member:
    """One network of an ensemble: its folder name, its bundle config and its model."""

    name: str
    config: BundleConfig
    model: nn.Module


def _describe(what: str, value: CropSpec | str | None) -> str:
    if what == "face detector":
        return "none recorded" if value is None else repr(value)
    if value is None:
        return "none (whole images)"
    assert isinstance(value, CropSpec)
    return f"margin {value.margin:g}, {'square' if value.square else 'not square'}"


def check_members(members: Sequence[tuple[str, BundleConfig]], source: str) -> None:
    """Refuse members that would need different faces: the Detector finds and crops faces
    once for all members, so they must share the crop and the face detector."""
    (first, base), *rest = members
    for name, config in rest:
        for what, ours, theirs in (
            ("face crop", base.preprocessing.crop, config.preprocessing.crop),
            ("face detector", base.preprocessing.face_detector, config.preprocessing.face_detector),
        ):
            if ours != theirs:
                raise BundleError(
                    f"{source}: member {name} has {what} {_describe(what, theirs)} but member {first} has "
                    f"{_describe(what, ours)}; the members of an ensemble must share the face crop and the "
                    "face detector, since faces are found and cropped once for all of them."
                )


def is_ensemble(folder: str | Path) -> bool:
    """Whether ``folder`` holds an ensemble (an ``ensemble.json``) rather than a bundle."""
    return (Path(folder) / ENSEMBLE_FILE).is_file()


def read_ensemble(folder: str | Path) -> EnsembleConfig:
    """Read and validate ``ensemble.json`` of an ensemble folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleError(f"{folder}: ensemble folder not found.")
    path = folder / ENSEMBLE_FILE
    if not path.is_file():
        raise BundleError(f"{folder}: not an ensemble (no {ENSEMBLE_FILE}).")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: unreadable JSON ({exc}).") from exc
    return EnsembleConfig.from_dict(raw, source=str(path))


def load_ensemble(
    folder: str | Path, load_member: Callable[[Path], tuple[BundleConfig, nn.Module]] = load_bundle
) -> tuple[EnsembleConfig, list[Member]]:
    """The ensemble's config and its members, each with its stored weights, in eval mode.

    ``load_member`` reads one member folder: ``load_bundle`` (PyTorch), or the ONNX loader."""
    folder = Path(folder)
    config = read_ensemble(folder)
    source = str(folder / ENSEMBLE_FILE)
    members = []
    for name in config.members:
        member_dir = folder / name
        if not member_dir.is_dir():
            raise BundleError(f"{source}: member {name!r} not found (no folder {member_dir}).")
        if is_ensemble(member_dir):
            raise BundleError(f"{source}: member {name!r} is itself an ensemble; members must be bundles.")
        member_config, model = load_member(member_dir)
        members.append(Member(name, member_config, model))
    check_members([(repr(m.name), m.config) for m in members], source)
    return config, members


def check_ensemble_dir(out_dir: str | Path) -> Path:
    """The resolved folder an ensemble may be written to: new, empty, or an ensemble to replace."""
    out = Path(out_dir).resolve()
    if not out.exists():
        return out
    if not out.is_dir():
        raise BundleError(f"{out}: exists and is not a folder; choose another output folder.")
    others = sorted(p.name for p in out.iterdir())
    if others and not is_ensemble(out):
        raise BundleError(
            f"{out}: exists and is not an ensemble (it holds {', '.join(others[:3])}"
            f"{', ...' if len(others) > 3 else ''}); choose a new or empty output folder."
        )
    return out


def save_ensemble(out_dir: str | Path, config: EnsembleConfig, sources: Sequence[str | Path]) -> Path:
    """Write an ensemble to ``out_dir`` atomically: a copy of each member bundle in ``sources``
    (aligned with ``config.members``, with its ONNX export if it has one) under its member
    name, and ``ensemble.json``.

    Replacing an existing ensemble drops its old members and carries its other files
    (reports, say) over, as :func:`~deepfake_detector.bundle.save_bundle` does.
    """
    if len(sources) != len(config.members):
        raise InvalidArgumentError(
            f"save_ensemble needs one source folder per member: {len(config.members)} member(s), "
            f"{len(sources)} source(s)."
        )
    out = check_ensemble_dir(out_dir)

    from .export import ONNX_DIR

    def fill(tmp: Path) -> None:
        for name, source in zip(config.members, sources):
            (tmp / name).mkdir()
            for file in (CONFIG_FILE, WEIGHTS_FILE):
                shutil.copyfile(Path(source) / file, tmp / name / file)
            if (Path(source) / ONNX_DIR).is_dir():  # a member's export comes along: CPUs run it
                shutil.copytree(Path(source) / ONNX_DIR, tmp / name / ONNX_DIR)
        (tmp / ENSEMBLE_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")

    try:
        old_members = set(read_ensemble(out).members) if out.exists() else set()
    except BundleError:
        old_members = set()
    owned = old_members | set(config.members) | {ENSEMBLE_FILE}
    return replace_folder(out, fill, lambda name: name in owned)
