"""The labeling order as Label Studio 1.23.2 stores it: pure helpers, no HTTP.

Our order reaches Label Studio twice (:mod:`.client` writes both):

- the task data field ``la_rank`` (:func:`format_rank`: ``"000001"`` = label first), which
  the "Next to label" tab sorts on ("Label Tasks As Displayed");
- the ``score`` of each task's prediction (:func:`order_score`), which the main button,
  "Label All Tasks", follows once the project's sampling is ``Uncertainty sampling``:
  ``projects/functions/next_task.py::_try_uncertainty_sampling`` keeps the unsolved tasks
  that hold a prediction of ``project.model_version`` and orders them by
  ``predictions__score`` ascending (lowest first).

Label Studio refuses a prediction score outside [0, 1] (the SDK's
``LabelInterface.validate_prediction``, run on ``import/predictions``: measured, the
prediction is dropped). So a ranked task's prediction score is its rank divided by
:data:`RANK_SCALE` (rank 1 -> 0.000001, rank 12 -> 0.000012; the Data Manager's
"Prediction score" column shows that), and a task that has no rank yet gets
``0.5 + confidence / 2``: after every ranked task, and among themselves the least sure
first (Label Studio's own meaning of the score). Ranks from :data:`MAX_SCORED_RANK` on share
one score (Label Studio then serves them in no defined order).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_SCORED_RANK", "RANK_FIELD", "RANK_SCALE", "RANK_WIDTH", "UNRANKED_SCORE",
           "format_rank", "order_score", "parse_rank", "task_rank"]

RANK_FIELD = "la_rank"
RANK_WIDTH = 6  # "000001": text order = numeric order up to 999999 tasks
#: A ranked task's prediction score is rank / RANK_SCALE.
RANK_SCALE = 10**RANK_WIDTH
#: The lowest score of a task without a rank: above every ranked task's.
UNRANKED_SCORE = 0.5
#: Ranks from here on get the same score, just below :data:`UNRANKED_SCORE`.
MAX_SCORED_RANK = int(UNRANKED_SCORE * RANK_SCALE) - 1


def format_rank(rank: int) -> str:
    """``3`` -> ``"000003"``: zero-padded so that text order is rank order (see
    :mod:`.client`: Label Studio on PostgreSQL sorts a data field as text)."""
    if not 1 <= rank < 10**RANK_WIDTH:
        raise ValueError(f"rank must be in 1..{10**RANK_WIDTH - 1}, got {rank}")
    return f"{rank:0{RANK_WIDTH}d}"


def parse_rank(value: Any) -> int | None:
    """A stored ``la_rank`` (``"000003"``, or a number) as an int; None when it isn't one."""
    if isinstance(value, bool):
        return None
    try:
        rank = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return rank if 1 <= rank < 10**RANK_WIDTH else None


def task_rank(task: Mapping[str, Any]) -> int | None:
    """The rank of a Label Studio task dict (its ``data[la_rank]``), or None."""
    data = task.get("data") if isinstance(task, Mapping) else None
    return parse_rank(data.get(RANK_FIELD)) if isinstance(data, Mapping) else None


def order_score(rank: int | None, confidence: float = 0.0) -> float:
    """The prediction ``score`` (in [0, 1], as Label Studio requires) that puts a task at its
    place in "Uncertainty sampling": ``rank / RANK_SCALE``; without a rank,
    ``0.5 + confidence / 2`` (``confidence`` clipped to [0, 1])."""
    if rank is not None:
        return min(max(1, int(rank)), MAX_SCORED_RANK) / RANK_SCALE
    confidence = min(1.0, max(0.0, float(confidence)))
    return round(UNRANKED_SCORE + (1.0 - UNRANKED_SCORE) * confidence, 6)
