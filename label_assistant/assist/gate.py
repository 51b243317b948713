"""The gate: what decides whether an annotation reaches training. Pure: arrays in, a decision out.

:func:`gate` takes what the annotator drew as a label map (decoding is the caller's job),
optionally its instance map, the decoder's class conflicts and the serving model's class
probabilities, and:

1. inspects the **raw** map (what the annotator drew: fragments, touching objects, overlaps,
   and, with probabilities, background painted over an object the model is sure of);
2. cleans it (:func:`~label_assistant.assist.post.cleanup`);
3. inspects the **cleaned** map: errors the cleanup caused (everything was a stray fragment)
   block too;
4. admits the annotation when neither inspection found an error.

The service (:mod:`label_assistant.ml_backend.worker`) and the simulator
(:mod:`label_assistant.simulate`) both decide through here, so a simulated round gates
annotations the way the service does. An annotation that can't be decoded at all is turned
away with :func:`refused`, in the same report shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from label_assistant.assist.inspect import InspectionConfig, InspectionContext, inspect
from label_assistant.assist.post import CleanupParams, cleanup


@dataclass
class Decision:
    """What the gate decided about one annotation.

    ``report`` (JSON-able): ``admitted``, ``reasons`` (the errors' messages), ``findings``
    (the raw map's findings, then errors only the cleaned map has), ``omitted`` (findings
    over the per-rule limit), ``cleanup`` (pixels changed per operation), ``ignored``
    (results the decoder skipped) and ``config_hash``. ``label_map`` / ``instances`` are the
    cleaned maps that train; None when nothing could be decoded.
    """

    admitted: bool
    report: dict[str, Any]
    label_map: np.ndarray | None
    instances: np.ndarray | None = None

    @property
    def state(self) -> str:
        return "admitted" if self.admitted else "quarantined"


def refused(code: str, message: str, *, config_hash: str | None = None) -> Decision:
    """The decision for an annotation that can't be inspected (unreadable, no image)."""
    finding = {"code": code, "severity": "error", "message": message, "bbox": None,
               "pixels": None}
    return Decision(False, {"admitted": False, "reasons": [message], "findings": [finding],
                            "omitted": {}, "config_hash": config_hash}, None)


def gate(
    label_map: np.ndarray,
    *,
    class_names: Sequence[str],
    instances: np.ndarray | None = None,
    conflicts: Any = None,
    probabilities: np.ndarray | None = None,
    inspection: InspectionConfig | None = None,
    image_shape: tuple[int, int] | None = None,
    ignored: Sequence[Any] = (),
    config_hash: str | None = None,
) -> Decision:
    """Inspect, clean, inspect again; see the module doc.

    ``class_names``: the K foreground classes (1..K). ``probabilities``: the serving model's
    float32 (K+1, H, W) softmax for this image, or None (Otsu serves: the model rules don't
    run). ``image_shape`` defaults to the label map's.
    """
    inspection = inspection or InspectionConfig()
    shape = tuple(image_shape) if image_shape is not None else label_map.shape[:2]

    def context(labels: np.ndarray, objects: np.ndarray | None, clashes: Any
                ) -> InspectionContext:
        return InspectionContext(label_map=labels, n_classes=len(class_names),
                                 class_names=list(class_names), image_shape=shape,
                                 instances=objects, conflicts=clashes,
                                 probabilities=probabilities)

    raw = inspect(context(label_map, instances, conflicts), inspection)
    cleaned = cleanup(label_map, instances=instances,
                      params=CleanupParams(min_fragment_size=inspection.min_fragment_size))
    after = inspect(context(cleaned.label_map, cleaned.instances, None), inspection)
    findings = [f.to_dict() for f in raw.findings]
    seen = {(f["code"], f["message"]) for f in findings}
    findings += [f.to_dict() for f in after.errors if (f.code, f.message) not in seen]
    admitted = raw.admitted and after.admitted
    report = {
        "admitted": admitted,
        "reasons": [f["message"] for f in findings if f["severity"] == "error"],
        "findings": findings,
        "omitted": raw.omitted,
        "cleanup": dict(cleaned.changes),
        "ignored": [list(i) for i in ignored],
        "config_hash": config_hash,
    }
    return Decision(admitted, report, cleaned.label_map, cleaned.instances)
