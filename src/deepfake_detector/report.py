"""The evaluation report: a Markdown page for people and a ``metrics.json`` for programs.

Markdown because it renders on GitHub and in editors, diffs well between runs, and needs
no dependency. Images are linked by relative path, so the folder can be moved or zipped.
"""

from __future__ import annotations

import json
from os import PathLike
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .errors import InvalidArgumentError
from .metrics import json_ready
from .results import LABELS

_HEADLINE = (
    "n",
    "accuracy_score",
    "balanced_accuracy_score",
    "roc_auc_score",
    "average_precision_score",
    "equal_error_rate",
    "log_loss",
    "threshold",
)
_CLASS_ROWS = (*LABELS, "macro avg", "weighted avg")


def format_value(value: Any) -> str:
    """A table cell: floats to 4 decimals, whole counts as integers, missing as ``n/a``."""
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _count(value: Any) -> str:
    """A support count, which scikit-learn reports as a float."""
    return str(int(value)) if isinstance(value, (int, float)) and value == value else format_value(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table as lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _section(name: str, metrics: dict[str, Any]) -> list[str]:
    """Headline, per-class, confusion-matrix and per-group tables of one evaluated set."""
    lines = [f"## {name}", "", "### Headline", ""]
    lines += _table(["metric", "value"], [[key, format_value(metrics.get(key))] for key in _HEADLINE])

    report = metrics.get("classification_report") or {}
    rows = [
        [
            cls,
            *(format_value(scores.get(k)) for k in ("precision", "recall", "f1-score")),
            _count(scores.get("support")),
        ]
        for cls in _CLASS_ROWS
        if isinstance(scores := report.get(cls), dict)
    ]
    if rows:
        lines += ["### Per class", ""]
        lines += _table(["class", "precision", "recall", "F1", "support"], rows)

    cm = metrics.get("confusion_matrix")
    if cm:
        lines += ["### Confusion matrix", "", "Rows are the true class, columns the predicted one.", ""]
        lines += _table(
            ["true \\ predicted", *cm["labels"]],
            [[label, *(_count(c) for c in counts)] for label, counts in zip(cm["labels"], cm["matrix"])],
        )

    per_group = metrics.get("per_group")
    if per_group:
        lines += [
            "### Per group",
            "",
            "A pure fake group's AUC is against all reals, a pure real group's against all fakes; "
            "a group holding both classes has its own roc_auc_score.",
            "",
        ]
        header = [
            "group",
            "n",
            "label",
            "accuracy_score",
            "mean_p_fake",
            "roc_auc_score",
            "roc_auc_score_vs_real",
            "roc_auc_score_vs_fake",
        ]
        lines += _table(
            header,
            [
                [format_value(group), *(format_value(entry.get(k)) for k in header[1:])]
                for group, entry in per_group.items()
            ],
        )
    return lines


def write_report(
    out_dir: str | PathLike[str],
    sections: list[dict[str, Any]],
    *,
    title: str,
    model_summary: dict[str, Any],
    plots: dict[str, str | None],
) -> Path:
    """Write ``report.md`` and ``metrics.json`` into ``out_dir``; return the report's path.

    ``sections`` are ``{"name": ..., "metrics": compute_metrics(...)}`` (for example the
    test set as-is and after laundering); ``plots`` maps a caption to a PNG path relative
    to ``out_dir``, and ``None`` entries (a plot that was not made) are skipped.
    """
    for i, section in enumerate(sections):
        if not isinstance(section, dict) or "name" not in section or "metrics" not in section:
            raise InvalidArgumentError(f"sections[{i}] must be a dict with 'name' and 'metrics'; got {section!r:.200}.")
    payload = json_ready({"sections": sections, "model": model_summary})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    lines = [f"# {title}", "", "## Model", ""]
    lines += _table(["field", "value"], [[format_value(k), format_value(v)] for k, v in model_summary.items()])
    for section in sections:
        lines += _section(format_value(section["name"]), section["metrics"])
    figures = [(caption, name) for caption, name in plots.items() if name is not None]
    if figures:
        lines += ["## Plots", ""]
        for caption, name in figures:
            lines += [f"### {caption}", "", f"![{caption}]({quote(Path(name).as_posix())})", ""]

    report_path = out / "report.md"
    report_path.write_text("\n".join(lines), encoding="utf-8")
    (out / "metrics.json").write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return report_path
