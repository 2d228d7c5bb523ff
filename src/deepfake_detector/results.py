"""The one result schema: what every front end prints, serves or downloads.

Plain dataclasses with no torch import, so that light front ends can use them.
``p_fake`` is always the probability that the input is fake.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

LABEL_REAL = "real"
LABEL_FAKE = "fake"
LABELS = (LABEL_REAL, LABEL_FAKE)


@dataclass
class Prediction:
    """The verdict on one input.

    ``label`` is ``"fake"`` when ``p_fake`` is at or above ``threshold``, else ``"real"``.
    ``confidence`` is the probability of the chosen label. A failed input has
    ``label``/``p_fake``/``confidence`` set to ``None`` and ``error`` holding the reason.
    """

    path: str | None
    label: str | None
    p_fake: float | None
    confidence: float | None
    seconds: float
    threshold: float | None = None
    model: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the input was scored."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; the CLI's JSON lines and CSV rows are exactly this."""
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def field_names(cls) -> list[str]:
        """Column order for tables and CSV."""
        return [f.name for f in fields(cls)]

    @classmethod
    def failed(cls, path: str | None, error: str, seconds: float = 0.0, model: str | None = None) -> Prediction:
        """The row for an input that could not be scored."""
        return cls(path=path, label=None, p_fake=None, confidence=None, seconds=seconds, model=model, error=error)
