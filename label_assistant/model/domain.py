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

A version also keeps its **checks** (:meth:`Domain.with_checks`): the descriptors of its
validation images, each with whether the version beat the fallback (Otsu) on that image's
labeled pixels. An image is then familiar only when, among the checked images within the
distance, more were won than lost: training on a kind of image is not enough, the version
must have beaten Otsu on a held-out image of that kind. Measured on the same benchmark: the
third-round models had trained on bright-field images, which made them familiar, but no
validation annotation was bright-field, and they scored 0.11-0.51 there against Otsu's
0.79-0.85. With this rule and the promotion rule's bootstrap
(:mod:`label_assistant.model.promotion`), what served on the same benchmark never scored
below Otsu's 0.911 test Dice: 0.915 in all four rounds with dense masks, 0.927 with
whole objects in a Background ring (1 seed).

Pure numpy; the descriptors travel in ``version.json`` as base64 float16.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
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


def _pack(rows: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(rows, dtype="<f2").tobytes()).decode("ascii")


def _unpack(text: str, shape: Iterable[int]) -> np.ndarray:
    raw = np.frombuffer(base64.b64decode(text), dtype="<f2")
    return raw.reshape(tuple(int(n) for n in shape)).astype(np.float32)


def _descriptors(inputs: Iterable[np.ndarray]) -> np.ndarray:
    from label_assistant.selectors.diversity import image_descriptor

    rows = [image_descriptor(x) for _, x in zip(range(MAX_IMAGES), inputs, strict=False)]
    if not rows:
        raise ValueError("a domain needs at least one image")
    return np.stack(rows).astype(np.float32)


def _distances(rows: np.ndarray, descriptor: np.ndarray) -> np.ndarray:
    if descriptor.shape[0] != rows.shape[1]:  # another channel count
        return np.full(len(rows), np.inf)
    return np.sqrt(((rows - descriptor) ** 2).sum(axis=1))


@dataclass(frozen=True)
class Domain:
    """The descriptors of a version's images; ``distance``: the familiarity radius;
    ``checked`` / ``won``: the validation images' descriptors and whether the version beat
    the fallback on each (None for versions without checks)."""

    descriptors: np.ndarray  # float32 (n, d)
    distance: float = FAMILIAR_DISTANCE
    checked: np.ndarray | None = None  # float32 (m, d)
    won: np.ndarray | None = None  # bool (m,)

    @classmethod
    def of_inputs(cls, inputs: Iterable[np.ndarray], distance: float = FAMILIAR_DISTANCE
                  ) -> Domain:
        """The domain of model inputs (float32 (C, H, W) in [0, 1], the model's channels)."""
        return cls(_descriptors(inputs), float(distance))

    def with_checks(self, inputs: Sequence[np.ndarray], won: Sequence[bool]) -> Domain:
        """This domain with the validation images (model inputs) and, for each, whether the
        version beat the fallback there."""
        if len(inputs) != len(won):
            raise ValueError(f"{len(inputs)} checked images for {len(won)} outcomes")
        if not len(inputs):
            return replace(self, checked=None, won=None)
        return replace(self, checked=_descriptors(inputs), won=np.asarray(won, dtype=bool))

    def distances(self, x: np.ndarray) -> np.ndarray:
        """Distances from a model input to every image of the domain (inf when the channel
        count differs)."""
        from label_assistant.selectors.diversity import image_descriptor

        return _distances(self.descriptors, image_descriptor(x))

    def nearest(self, x: np.ndarray) -> float:
        """Distance from a model input to the nearest image of the domain."""
        return float(self.distances(x).min())

    def unfamiliar(self, x: np.ndarray) -> str | None:
        """None when the version pre-labels this model input, else why not, in words:
        fewer than :data:`MIN_NEIGHBOURS` of its images (all of them, when it holds fewer)
        within its distance, or, with checks, no more checked images won than lost among
        those within the distance."""
        from label_assistant.selectors.diversity import image_descriptor

        descriptor = image_descriptor(x)
        distances = _distances(self.descriptors, descriptor)
        near = int((distances <= self.distance).sum())
        if near < min(MIN_NEIGHBOURS, len(self.descriptors)):
            return (f"it has not seen images like this one ({near} of its images within "
                    f"descriptor distance {self.distance:g}, nearest {distances.min():.2f})")
        if self.checked is None or self.won is None:
            return None
        close = _distances(self.checked, descriptor) <= self.distance
        wins, losses = int((close & self.won).sum()), int((close & ~self.won).sum())
        if wins > losses:
            return None
        return (f"it has not beaten Otsu on a held-out image like this one ({wins} won, "
                f"{losses} lost of its validation images within descriptor distance "
                f"{self.distance:g})")

    def familiar(self, x: np.ndarray) -> bool:
        """Whether the version pre-labels this model input (:meth:`unfamiliar` is None)."""
        return self.unfamiliar(x) is None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"descriptors_f16": _pack(self.descriptors),
                                "shape": list(self.descriptors.shape),
                                "distance": self.distance}
        if self.checked is not None and self.won is not None:
            data["checked"] = {"descriptors_f16": _pack(self.checked),
                               "shape": list(self.checked.shape),
                               "won": [bool(w) for w in self.won]}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Domain | None:
        """The domain stored with a version; None for versions that predate it."""
        if not data:
            return None
        checked = data.get("checked")
        return cls(_unpack(data["descriptors_f16"], data["shape"]), float(data["distance"]),
                   None if not checked else _unpack(checked["descriptors_f16"],
                                                    checked["shape"]),
                   None if not checked else np.asarray(checked["won"], dtype=bool))
