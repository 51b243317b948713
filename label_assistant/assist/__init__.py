"""Assistance around the annotator: ``pre`` (normalization, Otsu pre-labels), ``post``
(cleanup of submitted annotations) and ``inspect`` (rules and the admission gate)."""
