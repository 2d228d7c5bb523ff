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
from typing import Any

import torch
from torch import nn

from .errors import BundleError
from .preprocess import Preprocessing
from .results import LABELS

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
OUTPUTS = ("logit_fake", "logit_real")


@dataclass
class BundleConfig:
    """Contents of ``config.json``.

    ``output`` is ``"logit_fake"`` when the network's logit is log-odds of fake, or
    ``"logit_real"`` when it is log-odds of real (the prototype's Keras model);
    :meth:`p_fake_from_logits` hides the difference.
    """

    arch: str
    preprocessing: Preprocessing
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    output: str = "logit_fake"
    labels: list[str] = field(default_factory=lambda: list(LABELS))
    threshold: float = 0.5
    explain_layer: str = ""
    name: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise BundleError(f"config output must be one of {OUTPUTS}; got {self.output!r}.")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise BundleError(f"config threshold must lie in [0, 1]; got {self.threshold!r}.")

    def p_fake_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Probability of fake from the network's raw output, whatever its orientation."""
        logits = logits.float().reshape(-1)
        return torch.sigmoid(logits if self.output == "logit_fake" else -logits)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["preprocessing"] = self.preprocessing.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> BundleConfig:
        if not isinstance(d, dict):
            raise BundleError(f"{source}: expected a JSON object.")
        version = d.get("format_version", FORMAT_VERSION)
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
        except TypeError as exc:
            raise BundleError(f"{source}: invalid config ({exc}).") from exc


def build_model(config: BundleConfig) -> nn.Module:
    """The bundle's network with random weights, in eval mode."""
    from .models import create_model

    model = create_model(config.arch, **config.arch_kwargs)
    return model.eval()


def save_bundle(out_dir: str | Path, config: BundleConfig, model: nn.Module) -> Path:
    """Write ``config`` and the model's weights to ``out_dir`` atomically; returns the path.

    An existing bundle at ``out_dir`` is replaced only after the new one is complete.
    Other files already in ``out_dir`` (training plots, checkpoints) are carried over.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkdtemp: its folder is private (0700), and that folder becomes the bundle.
    tmp = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex[:12]}.tmp"
    tmp.mkdir()
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        if out_dir.exists():
            for item in out_dir.iterdir():
                if item.name not in (CONFIG_FILE, WEIGHTS_FILE):
                    os.replace(item, tmp / item.name)
            old = out_dir.with_name(f".{out_dir.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


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
    model = build_model(config)
    try:
        state = load_file(str(weights))
    except Exception as exc:
        raise BundleError(f"{weights}: unreadable weights ({exc}).") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"{weights}: weights do not fit architecture {config.arch!r} ({exc}).") from exc
    return config, model.eval()
