"""Per-object measurements of segmented images (``label-assistant measure``).

- :mod:`.objects`: pure: a label map (and an instance map when known) -> objects, and each
  object's size, shape, skeleton and intensities from the original image values
  (scikit-image ``regionprops`` and ``skeletonize``), plus a per-image summary.
- :mod:`.sources`: where label maps come from: folders of images and masks (any mask
  type of :mod:`label_assistant.datasets`), the admitted annotations in a backend's store,
  or a model version's predictions (through :class:`label_assistant.model.predictor.Predictor`).
"""
