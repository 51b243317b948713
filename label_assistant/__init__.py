"""label-assistant: an active-learning labeling service for image segmentation.

Sub-packages, one concern each:

- ``labelstudio``: the Label Studio format layer (label config, brush RLE, annotation <-> label map)
- ``assist``: pre-assistance (normalization, Otsu pre-labels), post-assistance (cleanup),
  inspection rules and the admission gate
- ``model``: architectures, masked losses, training, tiled inference, version registry
- ``selectors``: ranking of unlabeled images
- ``ml_backend``: the Label Studio ML backend service
- ``cli``: the ``label-assistant`` command line

Shared contracts live in :mod:`label_assistant.labelmap` (the label map values) and
:mod:`label_assistant.images` (how an image is read, as Label Studio shows it).
"""

__version__ = "0.1.0"
