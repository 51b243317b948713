"""The one place that makes torchvision importable on the CPU build of torch.

torchvision 0.28.0 from PyPI is a CUDA build; on the ``2.13.0+cpu`` torch installed on these
machines ``import torchvision`` fails with ``RuntimeError: operator torchvision::nms does not
exist`` (pytorch/vision#9085), and segmentation-models-pytorch and timm import it. Registering
the schemas of the two missing operators lets the import finish; only those two operators
(non-maximum suppression, which segmentation never calls) stay unusable. With a matching
torchvision the first import succeeds and nothing is registered.
"""

from __future__ import annotations

import sys
from types import ModuleType

_MISSING_OPERATOR = "operator torchvision::nms does not exist"
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # kept alive: the registration lasts as long as this object


def import_torchvision() -> ModuleType:
    """Import torchvision; register the missing operator schemas only on that exact error."""
    global _library
    try:
        import torchvision
    except RuntimeError as error:
        if _MISSING_OPERATOR not in str(error):
            raise
        import torch

        _library = torch.library.Library("torchvision", "FRAGMENT")
        for schema in _SCHEMAS:
            _library.define(schema)
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        import torchvision
    return torchvision


def import_smp() -> ModuleType:
    """Import segmentation_models_pytorch after making torchvision importable."""
    import_torchvision()
    import segmentation_models_pytorch

    return segmentation_models_pytorch
