"""Interactive labeling: a box, clicks or four extreme points become one object's mask.

Pure numpy/OpenCV, no I/O (the web side is :mod:`label_assistant.ml_backend.interactive`,
Label Studio's format :mod:`label_assistant.labelstudio.context`):

- :mod:`.prompts`: :class:`Box`, :class:`Click`, :class:`Prompt` in image pixels;
- :mod:`.probabilities`: a model's class probabilities read window by window
  (:class:`~.probabilities.WindowedProbabilities` runs the model only on the windows read,
  given a way to run it on a crop);
- :mod:`.segment`: :func:`working_image` (made once per image), :func:`box_to_mask`
  (GrabCut on a bounded crop, model-guided when class probabilities are given: it reads
  those of the box only),
  :func:`clicks_to_mask` (one click: the model's object or a grown region; every further
  click corrects it near itself, :func:`corrected`; recomputed from all of them),
  :func:`extreme_points_to_mask`,
  and :func:`segment`, which picks one of them for a :class:`Prompt`;
- :mod:`.simulate`: the standard click simulator (next click at the centre of the largest
  error), IoU and NoC, for tests and ``benchmarks/bench_interactive.py``.
"""

from label_assistant.interactive.prompts import (
    Box,
    Click,
    Prompt,
    PromptError,
    box_of_extreme_points,
)
from label_assistant.interactive.segment import (
    Segmentation,
    box_to_mask,
    clicks_to_mask,
    corrected,
    extreme_points_to_mask,
    object_under_click,
    segment,
    working_image,
)

__all__ = [
    "Box",
    "Click",
    "Prompt",
    "PromptError",
    "Segmentation",
    "box_of_extreme_points",
    "box_to_mask",
    "clicks_to_mask",
    "corrected",
    "extreme_points_to_mask",
    "object_under_click",
    "segment",
    "working_image",
]
