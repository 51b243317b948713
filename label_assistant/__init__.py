"""label-assistant: an active-learning labeling service for image segmentation.

Sub-packages, one concern each:

- ``labelstudio``: the Label Studio format layer (label config, brush RLE, annotation <->
  label map) and one client for its API
- ``assist``: pre-assistance (normalization, Otsu pre-labels), post-assistance (cleanup),
  inspection rules and the gate
- ``model``: architectures, masked losses, training, tiled inference, the one predictor,
  the version registry
- ``selectors``: ranking of unlabeled images (pure: scores, diversity, sequences, strategies)
- ``ml_backend``: the Label Studio ML backend service
- ``simulate``: the oracle active-learning experiment
- ``reporting``: rounds, report and plots
- ``microscopy``: microscopy files (TIFF stacks, 16-bit, multi-channel) read plane by plane,
  display PNGs, kept originals, and their import into Label Studio
- ``measure``: per-object measurements of label maps, annotations or a model's predictions
- ``cli``: the ``label-assistant`` command line
- ``devtools``: the demo, the walkthrough, sample data, a local Label Studio runner

Shared contracts live in :mod:`label_assistant.labelmap` (the label map values),
:mod:`label_assistant.images` (how an image is read and normalized),
:mod:`label_assistant.metrics` (scores over labeled pixels), :mod:`label_assistant.datasets`
(image/mask pairs on disk), :mod:`label_assistant.workspace` (the work directory's layout)
and :mod:`label_assistant.files` (atomic file writes).
"""

__version__ = "0.1.0"
