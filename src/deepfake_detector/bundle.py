"""The model bundle: a folder with ``config.json`` and ``model.safetensors``.

The config says everything needed to use the weights (architecture, preprocessing,
which way the logit points, the threshold) and how they were made. Writing is atomic:
a temporary folder beside the target is filled, then renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .checks import is_finite
from .errors import BundleError, DeepfakeDetectorError, UnknownModelError
from .preprocess import Preprocessing
from .results import LABELS
from .threshold import Reencode, check_reencode, check_uncertain

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
OUTPUTS = ("logit_fake", "logit_real")
MAX_NAMES_SHOWN = 3  # tensor names a weights error lists: another network's full list runs to kilobytes
MAX_REASON_CHARS = 300  # the most of a library's own error text a bundle error repeats


def p_fake_from_logits(logits: torch.Tensor, output: str = "logit_fake") -> torch.Tensor:
    """``p_fake`` in float32 from raw logits; training and inference both use this, so a
    threshold chosen on validation scores means the same at prediction time."""
    logits = logits.float().reshape(-1)
    return torch.sigmoid(logits if output == "logit_fake" else -logits)


@dataclass
class BundleConfig:
    """Contents of ``config.json``.

    ``output`` is ``"logit_fake"`` when the network's logit is log-odds of fake, or
    ``"logit_real"`` when it is log-odds of real (the prototype's Keras model);
    :meth:`p_fake_from_logits` hides the difference. ``uncertain`` holds the rule for
    verdicts too fragile to give: ``band`` (see :func:`~deepfake_detector.threshold.label_for`)
    and ``reencode`` (see :attr:`reencode`).
    """

    arch: str
    preprocessing: Preprocessing
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    output: str = "logit_fake"
    labels: list[str] = field(default_factory=lambda: list(LABELS))
    threshold: float = 0.5
    uncertain: dict[str, Any] = field(default_factory=lambda: {"band": 0.0})
    explain_layer: str = ""
    name: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        """Check every field now, so a bad bundle fails on load, naming the field, and not
        mid-run or, worse, with silently wrong scores."""
        if not isinstance(self.arch, str) or not self.arch:
            from .models import list_models

            known = ", ".join(list_models())
            raise BundleError(f"config arch must be a model name, one of {known}; got {self.arch!r}.")
        if not isinstance(self.preprocessing, Preprocessing):
            raise BundleError(f"config preprocessing must be a Preprocessing; got {self.preprocessing!r}.")
        if self.output not in OUTPUTS:
            raise BundleError(f"config output must be one of {OUTPUTS}; got {self.output!r}.")
        threshold = self.threshold
        if not is_finite(threshold) or not 0.0 <= threshold <= 1.0:
            raise BundleError(f"config threshold must be a number in [0, 1]; got {threshold!r}.")
        self.threshold = float(threshold)
        try:
            check_uncertain(self.uncertain)
        except DeepfakeDetectorError as exc:
            raise BundleError(f"config uncertain: {exc}") from exc
        if not isinstance(self.labels, list) or sorted(map(str, self.labels)) != sorted(LABELS):
            raise BundleError(f"config labels must be {list(LABELS)} in some order; got {self.labels!r}.")
        for key in ("arch_kwargs", "training", "metrics"):
            if not isinstance(getattr(self, key), dict):
                raise BundleError(f"config {key} must be an object; got {getattr(self, key)!r}.")
        for key in ("explain_layer", "name"):
            if not isinstance(getattr(self, key), str):
                raise BundleError(f"config {key} must be a string; got {getattr(self, key)!r}.")

    @property
    def reencode(self) -> Reencode | None:
        """The re-encoded copies an image's verdict must survive, from ``uncertain.reencode``
        (absent or null: no check)."""
        return check_reencode(self.uncertain.get("reencode"))

    def p_fake_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Probability of fake from the network's raw output, whatever its orientation."""
        return p_fake_from_logits(logits, self.output)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["preprocessing"] = self.preprocessing.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> BundleConfig:
        if not isinstance(d, dict):
            raise BundleError(f"{source}: expected a JSON object.")
        version = d.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int):
            raise BundleError(f"{source}: format_version must be an integer; got {version!r}.")
        if version > FORMAT_VERSION:
            raise BundleError(
                f"{source}: bundle format {version} is newer than this version of deepfake-detector "
                f"understands ({FORMAT_VERSION}); upgrade the package."
            )
        try:
            known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
            known["preprocessing"] = Preprocessing.from_dict(d["preprocessing"])
            return cls(**known)
        except KeyError as exc:
            raise BundleError(f"{source}: missing required key {exc}.") from exc
        except BundleError as exc:
            raise BundleError(f"{source}: {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise BundleError(f"{source}: invalid config ({exc}).") from exc


def build_model(config: BundleConfig) -> nn.Module:
    """The bundle's network with random weights, in eval mode."""
    from .models import create_model

    try:
        model = create_model(config.arch, **config.arch_kwargs)
    except UnknownModelError as exc:
        raise BundleError(f"config arch: {exc}") from exc
    except TypeError as exc:
        raise BundleError(
            f"arch_kwargs {config.arch_kwargs!r} do not fit architecture {config.arch!r} ({exc})."
        ) from exc
    return model.eval()


def check_output_dir(out_dir: str | Path) -> Path:
    """The resolved folder a bundle may be written to; refuses a folder holding other things.

    A new bundle may replace an existing bundle (its extra files, such as plots, are
    kept) or fill an empty folder or one holding only an interrupted run's checkpoint.
    Anything else is refused, so that ``--out .`` never moves a user's files around.
    """
    out = Path(out_dir).resolve()
    if not out.exists():
        return out
    if not out.is_dir():
        raise BundleError(f"{out}: exists and is not a folder; choose another output folder.")
    if (out / CONFIG_FILE).is_file():
        return out
    others = [p.name for p in out.iterdir() if not p.name.startswith(".checkpoint")]
    if others:
        raise BundleError(
            f"{out}: exists and is not a model bundle (it holds {', '.join(sorted(others)[:3])}"
            f"{', ...' if len(others) > 3 else ''}); choose a new or empty output folder."
        )
    return out


def replace_folder(out_dir: Path, fill: Callable[[Path], None], owned: Callable[[str], bool]) -> Path:
    """Write a folder atomically: ``fill(tmp)`` makes the new contents in a temporary folder
    beside ``out_dir``, which then takes its place, so a crash never leaves a half-written one.

    Entries of an existing ``out_dir`` for which ``owned(name)`` holds belong to the version
    being replaced and are dropped; the others (plots, reports) are carried over.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkdtemp: its folder is private (0700), and that folder becomes the result.
    tmp = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex[:12]}.tmp"
    tmp.mkdir()
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return out_dir
    for item in out_dir.iterdir():
        if not owned(item.name):
            os.replace(item, tmp / item.name)
    old = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex[:12]}.old")
    os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old)
    return out_dir


def save_bundle(out_dir: str | Path, config: BundleConfig, model: nn.Module) -> Path:
    """Write ``config`` and the model's weights to ``out_dir`` atomically; returns the path.

    Other files already in an existing bundle folder (plots, reports) are carried over.
    """
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    broken = non_finite(state)
    if broken:  # a diverged run or a broken import: such a bundle would score everything NaN
        raise BundleError(f"{out_dir}: not saved: {broken}.")

    def fill(tmp: Path) -> None:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        os.chmod(tmp / WEIGHTS_FILE, 0o644)  # safetensors writes 0600; a bundle is shared, like the config beside it
        (tmp / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")

    return replace_folder(check_output_dir(out_dir), fill, lambda name: name in (CONFIG_FILE, WEIGHTS_FILE))


def read_config(bundle_dir: str | Path) -> BundleConfig:
    """Read and validate ``config.json`` of a bundle folder."""
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: model bundle folder not found.")
    path = bundle_dir / CONFIG_FILE
    if not path.is_file():
        raise BundleError(f"{bundle_dir}: not a model bundle (no {CONFIG_FILE}).")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: unreadable JSON ({exc}).") from exc
    return BundleConfig.from_dict(raw, source=str(path))


def load_bundle(bundle_dir: str | Path) -> tuple[BundleConfig, nn.Module]:
    """The bundle's config and its network with the stored weights, in eval mode."""
    from safetensors.torch import load_file

    bundle_dir = Path(bundle_dir)
    config = read_config(bundle_dir)
    weights = bundle_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise BundleError(f"{bundle_dir}: not a model bundle (no {WEIGHTS_FILE}).")
    try:
        model = build_model(config)
    except BundleError as exc:
        raise BundleError(f"{bundle_dir / CONFIG_FILE}: {exc}") from exc
    try:
        state = load_file(str(weights))
    except Exception as exc:
        raise BundleError(f"{weights}: unreadable weights ({_shorten(str(exc))}).") from exc
    misfit = state_mismatch(model.state_dict(), state)
    if misfit:
        raise BundleError(f"{weights}: weights do not fit architecture {config.arch!r} ({misfit}).")
    broken = non_finite(state)
    if broken:
        raise BundleError(f"{weights}: {broken}; the network would score every input NaN.")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        reason = _shorten(str(exc))
        raise BundleError(f"{weights}: weights do not fit architecture {config.arch!r} ({reason}).") from exc
    return config, model.eval()


def non_finite(state: dict[str, torch.Tensor]) -> str:
    """Which floating-point tensors of ``state`` hold NaN or infinite values, in one line ("" if none)."""
    bad = [name for name, tensor in state.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    return _listed(bad, "holding NaN or infinite values") if bad else ""


def state_mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str:
    """Why tensors ``found`` in a file cannot load into a network whose state is ``expected``,
    in one short line ("" when they fit): counts and the first few names, as another
    architecture's full list of names runs to kilobytes and buries the reason."""
    if not found:
        return "the file holds no tensors"
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found if name not in expected]
    misshaped = [
        f"{name}: {list(found[name].shape)} in the file, {list(tensor.shape)} in the network"
        for name, tensor in expected.items()
        if name in found and found[name].shape != tensor.shape
    ]
    parts = [
        _listed(items, what)
        for items, what in (
            (missing, "missing from the file"),
            (unexpected, "the network does not have"),
            (misshaped, "of another shape"),
        )
        if items
    ]
    return "; ".join(parts)


def _listed(items: list[str], what: str) -> str:
    """``"412 tensors missing from the file (a, b, c, ...)"``: a count and the first few names."""
    shown = ", ".join(items[:MAX_NAMES_SHOWN]) + (", ..." if len(items) > MAX_NAMES_SHOWN else "")
    return f"{len(items)} tensor{'s' if len(items) != 1 else ''} {what} ({shown})"


def _shorten(text: str) -> str:
    """``text`` cut to :data:`MAX_REASON_CHARS`, so a library's long error stays one readable line."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 4] + " ..."
