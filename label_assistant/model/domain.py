"""Which images a model version knows, so that it pre-labels only images like them.

A model trained on one kind of image can be confidently wrong on another, and validation
cannot see a kind of image that no annotation holds. Measured on DSB 2018
(``benchmarks/bench_guard_oracles.py``: 3 + 3 x 3 images picked at random, 15 test images of
5 groups): first models trained on a few dark fluorescence images beat Otsu on the
validation annotations and on dark images, but painted the background of the bright-field
images as nuclei, and what served scored 0.70-0.85 test Dice against Otsu's 0.91 for three
rounds, with every oracle (dense labels too).

A version therefore keeps the :func:`~label_assistant.selectors.diversity.image_descriptor`
of every image it trained and validated on (:class:`Domain`), and an image counts as
*familiar* when :data:`MIN_NEIGHBOURS` of them (one, for a domain of one image) lie within
:data:`FAMILIAR_DISTANCE` (Euclidean): one image of a kind is one example, not yet a kind
the model has learned. On other images the serving pre-labeler gives the fallback's (Otsu's)
pre-label, saying why (:meth:`label_assistant.model.predictor.Predictor.prelabel`).

Measured on the same benchmark: with this rule the first round's model served 0.92-0.93
(above Otsu) with every oracle; re-scoring the later rounds' versions, two neighbours
instead of one lifted the second round from 0.74-0.83 to 0.89-0.92, the third stayed at
0.79-0.92 (three bright-field images of nine were not enough to learn them).

Pure numpy; the descriptors travel in ``version.json`` as base64 float16.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Distance (between image descriptors) within which an image is familiar. Measured on the
#: 67 DSB 2018 images up to 400 px (5 groups, grey and colour, as model inputs of 3
#: channels): the nearest other image of the same group lies within 0.85 (medians 0.21-0.46);
#: the dark groups lie 0.18-0.58 from each other, the bright-field images 1.37 or more from
#: any dark one.
FAMILIAR_DISTANCE = 1.0
#: Images of the domain that must lie within :data:`FAMILIAR_DISTANCE` (fewer in a domain
#: that holds fewer images).
MIN_NEIGHBOURS = 2
#: At most this many descriptors are kept (the first ones: training images, then validation).
MAX_IMAGES = 256


@dataclass(frozen=True)
class Domain:
    """The descriptors of a version's images; ``distance``: the familiarity radius."""

    descriptors: np.ndarray  # float32 (n, d)
    distance: float = FAMILIAR_DISTANCE

    @classmethod
    def of_inputs(cls, inputs: Iterable[np.ndarray], distance: float = FAMILIAR_DISTANCE
                  ) -> Domain:
        """The domain of model inputs (float32 (C, H, W) in [0, 1], the model's channels)."""
        from label_assistant.selectors.diversity import image_descriptor

        rows = [image_descriptor(x) for _, x in zip(range(MAX_IMAGES), inputs, strict=False)]
        if not rows:
            raise ValueError("a domain needs at least one image")
        return cls(np.stack(rows).astype(np.float32), float(distance))

    def distances(self, x: np.ndarray) -> np.ndarray:
        """Distances from a model input to every image of the domain (inf when the channel
        count differs)."""
        from label_assistant.selectors.diversity import image_descriptor

        d = image_descriptor(x)
        if d.shape[0] != self.descriptors.shape[1]:
            return np.full(len(self.descriptors), np.inf)
        return np.sqrt(((self.descriptors - d) ** 2).sum(axis=1))

    def nearest(self, x: np.ndarray) -> float:
        """Distance from a model input to the nearest image of the domain."""
        return float(self.distances(x).min())

    def familiar(self, x: np.ndarray) -> bool:
        """Whether :data:`MIN_NEIGHBOURS` images of the domain (all of them, when it holds
        fewer) lie within its distance."""
        near = int((self.distances(x) <= self.distance).sum())
        return near >= min(MIN_NEIGHBOURS, len(self.descriptors))

    def to_dict(self) -> dict[str, Any]:
        data = np.ascontiguousarray(self.descriptors, dtype="<f2").tobytes()
        return {"descriptors_f16": base64.b64encode(data).decode("ascii"),
                "shape": list(self.descriptors.shape), "distance": self.distance}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Domain | None:
        """The domain stored with a version; None for versions that predate it."""
        if not data:
            return None
        shape = tuple(int(n) for n in data["shape"])
        raw = np.frombuffer(base64.b64decode(data["descriptors_f16"]), dtype="<f2")
        return cls(raw.reshape(shape).astype(np.float32), float(data["distance"]))
