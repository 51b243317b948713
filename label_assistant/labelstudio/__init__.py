"""The Label Studio format layer (label config, brush RLE codec, annotation <-> label map) and
one client for its API.

- :mod:`.config`: :func:`parse_label_config` -> :class:`LabelConfig` (image, controls,
  classes 1..K, background label, config hash).
- :mod:`.rle`: :func:`encode_rle` / :func:`decode_rle`, Label Studio's brush RLE, byte-identical
  to the SDK and about 20x faster.
- :mod:`.annotations`: :func:`annotation_to_label_map` (results -> label map, instances,
  conflicts) and :func:`label_map_to_results` (label map -> ``brushlabels`` results).
- :mod:`.context`: :func:`~.context.parse_context`, the smart tools' ``params.context``
  (boxes, clicks, extreme points) as one object's prompt.

- :mod:`.order`: the labeling order as Label Studio stores it (``la_rank``, and the
  prediction score that makes "Label All Tasks" follow it).
- :mod:`.client`: :class:`~.client.LabelStudioClient`, the one way the project talks to
  Label Studio's API (inspection fields, saved tabs, the labeling order, imports).

All but the client are pure functions on arrays and dicts; only the client does HTTP.
"""

from label_assistant.labelstudio.annotations import (
    AnnotationError,
    DecodedAnnotation,
    annotation_to_label_map,
    label_map_to_results,
)
from label_assistant.labelstudio.config import (
    LabelConfig,
    LabelConfigError,
    UnknownLabelError,
    parse_label_config,
)
from label_assistant.labelstudio.rle import RLEError, decode_rle, encode_rle

__all__ = [
    "AnnotationError",
    "DecodedAnnotation",
    "LabelConfig",
    "LabelConfigError",
    "RLEError",
    "UnknownLabelError",
    "annotation_to_label_map",
    "decode_rle",
    "encode_rle",
    "label_map_to_results",
    "parse_label_config",
]
