"""Assistance around the annotator, pure numpy: ``pre`` (normalization, Otsu pre-labels),
``post`` (cleanup of submitted annotations), ``inspect`` (the rules) and ``gate`` (the one
decision that admits an annotation to training, used by the service and the simulator)."""
