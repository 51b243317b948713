"""Champion and challenger: a trained candidate serves only if it beats the serving version.

Pure numpy. The serving version (the *champion*: Otsu before any model, else the current
model version) and the *candidate* are scored on exactly the same pixels: the labeled pixels
of the validation annotations, in the same run. The score that decides is the **mean Dice
over all classes, Background included** (:class:`Scores`): a model that paints everything
as foreground keeps a good foreground Dice on partial labels, but its Background Dice
collapses, and so does the mean. Pixel accuracy and per-class Dice are reported beside it.

Validation annotations (:func:`validation_keys`): a fixed share of the admitted annotations,
chosen by a hash of each annotation's key (the task for the backend, the file name on disk),
so the choice of one annotation never changes as the set grows and every round compares
versions on the same annotations. Given the images' descriptors, the same rule holds within
each **kind of image** (the annotations within the domain's familiarity distance of one
another): a kind with three annotations or more has a validation image, with six two, so a
version can earn, on a held-out image of that kind, the right to pre-label it
(:mod:`label_assistant.model.domain`). A newly admitted annotation can take over that role
from an older one of its kind (the first in hash order holds it), as with the minimum above.
With fewer than :data:`MIN_VALIDATION_PIXELS` labeled pixels of some class among
them, there is too little to validate honestly: the candidate is kept, not promoted, and says
so (``rounds --promote V`` forces it).

**Not by chance** (:func:`gain_interval`): a candidate serves only when its gain holds over
resamples of the validation pixels, in blocks of :data:`BLOCK` pixels a side (a paired
bootstrap: both versions scored on the same resampled blocks), at :data:`CONFIDENCE`. Measured
on DSB 2018 (``benchmarks/bench_guard_oracles.py``, objects with a Background ring, one
validation image): a second-round candidate beat the first model by 0.003 mean Dice on the
one validation image, was promoted, and scored 0.85 test Dice where the first model had
scored 0.93 (Otsu 0.91).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from label_assistant.labelmap import UNLABELED
from label_assistant.metrics import confusion_matrix, dice_iou_from_confusion

#: Share of admitted annotations held out for validation (by a stable hash of their key).
VALIDATION_SHARE = 0.2
#: Labeled validation pixels each class (Background included) needs for an honest comparison.
MIN_VALIDATION_PIXELS = 200
#: With this many annotations or more, at least one is held out even if no hash falls in the
#: share (the smallest hash): a first round can then be validated.
MIN_ANNOTATIONS_TO_HOLD_OUT = 3
#: With this many annotations or more, at least two are held out: one validation image says
#: nothing of how a version does on other images. Measured on DSB 2018
#: (``benchmarks/bench_guard_oracles.py``, dense masks): with six annotations and one of them
#: held out, a second model beat the first on that image (bound +0.001) and scored 0.89
#: test Dice where the first scored 0.93 and Otsu 0.91.
MIN_ANNOTATIONS_TO_HOLD_OUT_TWO = 6
#: Side, in pixels, of the blocks of validation pixels that the bootstrap resamples.
BLOCK = 64
#: The candidate's gain must be above zero in this share of the resamples (one-sided).
CONFIDENCE = 0.95
#: Bootstrap resamples (seeded: the same inputs always give the same verdict).
RESAMPLES = 1000
#: At most this many resampled units: beyond it, blocks are pooled at random into this many.
MAX_UNITS = 4096


def _fraction(key: str) -> float:
    """A key's stable position in [0, 1): the first 8 bytes of its sha256."""
    digest = hashlib.sha256(str(key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _least_held(n: int) -> int:
    """How many of ``n`` annotations are held out at least."""
    return 2 if n >= MIN_ANNOTATIONS_TO_HOLD_OUT_TWO else \
        1 if n >= MIN_ANNOTATIONS_TO_HOLD_OUT else 0


def validation_keys(keys: Iterable[str], share: float = VALIDATION_SHARE,
                    descriptors: np.ndarray | None = None,
                    distance: float | None = None) -> set[str]:
    """The keys held out for validation: those whose hash position is below ``share``, and
    at least the one (from :data:`MIN_ANNOTATIONS_TO_HOLD_OUT` keys) or two (from
    :data:`MIN_ANNOTATIONS_TO_HOLD_OUT_TWO`) with the smallest positions. With
    ``descriptors`` (one row per key, :func:`~label_assistant.selectors.diversity.
    image_descriptor`), the same rule holds within every *kind*, a key's kind being the keys
    within ``distance`` of it (default: the domain's familiarity distance): in hash order, a
    key is held out while its kind holds fewer than one (from three keys) or two (from six)
    held-out keys. Never all of them: at least one key trains."""
    from label_assistant.model.domain import FAMILIAR_DISTANCE

    if not 0.0 <= share < 1.0:
        raise ValueError(f"the validation share must be in [0, 1), got {share}")
    keys = list(map(str, keys))
    if descriptors is not None and len(descriptors) != len(keys):
        raise ValueError(f"{len(descriptors)} descriptors for {len(keys)} keys")
    unique = sorted(set(keys), key=_fraction)
    if share == 0.0 or len(unique) < 2:
        return set()
    held = [k for k in unique if _fraction(k) < share]
    least = _least_held(len(unique))
    held = held if len(held) >= least else unique[:least]
    if descriptors is not None:
        rows = {k: i for i, k in reversed(list(enumerate(keys)))}  # a key's first row
        x = np.asarray(descriptors, dtype=np.float64)[[rows[k] for k in unique]]
        near = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)) <= (
            FAMILIAR_DISTANCE if distance is None else distance)
        is_held = np.isin(unique, held)
        for i in range(len(unique)):  # hash order: the kind's first keys not yet held
            kind = near[i]
            if not is_held[i] and (kind & is_held).sum() < _least_held(int(kind.sum())):
                is_held[i] = True
        held = [k for k, h in zip(unique, is_held, strict=True) if h]
    return set(held[: len(unique) - 1])


@dataclass(frozen=True)
class Scores:
    """A version's scores on the validation pixels (classes 0..K, Background first)."""

    dice: tuple[float | None, ...]  # per class; None where a class is in neither map
    mean_dice: float | None  # over the classes that occur in the truth or the prediction
    pixel_accuracy: float | None
    pixels: tuple[int, ...]  # labeled validation pixels per class (the truth's)

    @classmethod
    def of_confusion(cls, cm: np.ndarray) -> Scores:
        cm = np.asarray(cm, dtype=np.int64)
        dice = dice_iou_from_confusion(cm)[0]
        tp = np.diag(cm).astype(np.float64)
        total = int(cm.sum())
        known = dice[np.isfinite(dice)]
        return cls(
            dice=tuple(None if not np.isfinite(d) else float(d) for d in dice),
            mean_dice=float(known.mean()) if known.size else None,
            pixel_accuracy=float(tp.sum() / total) if total else None,
            pixels=tuple(int(n) for n in cm.sum(axis=1)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "dice": list(self.dice), "pixels": list(self.pixels)}


def score(truths: Sequence[np.ndarray], predictions: Sequence[np.ndarray], n_classes: int
          ) -> Scores:
    """:class:`Scores` over the labeled pixels of every truth map (255 is ignored)."""
    if len(truths) != len(predictions):
        raise ValueError(f"{len(truths)} truth maps for {len(predictions)} predictions")
    cm = np.zeros((n_classes + 1, n_classes + 1), np.int64)
    for truth, prediction in zip(truths, predictions, strict=True):
        cm += confusion_matrix(truth, prediction, n_classes)
    return Scores.of_confusion(cm)


def block_confusions(truths: Sequence[np.ndarray], predictions: Sequence[np.ndarray],
                     n_classes: int, block: int = BLOCK) -> np.ndarray:
    """Confusion matrices ((n, K+1, K+1)) of the ``block`` x ``block`` pixel blocks that hold
    labeled pixels, over every truth map (255 is ignored), image after image; their sum is
    :func:`score`'s. :func:`block_images` says which image each block is of."""
    return _blocks(truths, predictions, n_classes, block)[0]


def block_images(truths: Sequence[np.ndarray], block: int = BLOCK) -> np.ndarray:
    """The image index of each of :func:`block_confusions`' blocks."""
    return _blocks(truths, truths, 1, block)[1]


def _blocks(truths: Sequence[np.ndarray], predictions: Sequence[np.ndarray], n_classes: int,
            block: int) -> tuple[np.ndarray, np.ndarray]:
    k1 = n_classes + 1
    out = [np.zeros((0, k1 * k1), np.int64)]
    images = [np.zeros(0, np.int64)]
    for index, (truth, prediction) in enumerate(zip(truths, predictions, strict=True)):
        truth, prediction = np.asarray(truth), np.asarray(prediction)
        if truth.shape != prediction.shape:
            raise ValueError(f"shapes differ: truth {truth.shape}, "
                             f"prediction {prediction.shape}")
        keep = truth != UNLABELED
        ys, xs = np.nonzero(keep)
        across = -(-truth.shape[1] // block)
        blocks = -(-truth.shape[0] // block) * across
        ids = (ys // block) * across + xs // block
        t = truth[keep].astype(np.int64)
        q = prediction[keep].astype(np.int64)
        q = np.where(q < k1, q, 0)  # an unlabeled prediction counts as background
        flat = np.bincount(ids * k1 * k1 + t * k1 + q,
                           minlength=blocks * k1 * k1).reshape(blocks, k1 * k1)
        kept = flat[flat.sum(axis=1) > 0]
        out.append(kept)
        images.append(np.full(len(kept), index, np.int64))
    return np.concatenate(out).reshape(-1, k1, k1), np.concatenate(images)


def gain_interval(candidate: np.ndarray, champion: np.ndarray,
                  images: np.ndarray | None = None, *, confidence: float = CONFIDENCE,
                  resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """The candidate's gain in mean Dice (all classes) over the champion's, at the
    ``1 - confidence`` and ``confidence`` quantiles of a paired bootstrap over validation
    blocks (:func:`block_confusions` of both, on the same truths). Each resample weighs the
    blocks by Poisson(1) counts, the same for both versions; with ``images`` (each block's
    image, :func:`block_images`), each block's weight is also its image's Poisson(1) count,
    so that the gain must hold across images, not only across the blocks of one."""
    if candidate.shape != champion.shape:
        raise ValueError(f"block confusions differ: {candidate.shape} and {champion.shape}")
    n = len(candidate)
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    images = np.zeros(n, np.int64) if images is None else np.asarray(images, np.int64)
    if images.shape != (n,):
        raise ValueError(f"{images.shape[0]} block images for {n} blocks")
    a = candidate.reshape(n, -1).astype(np.float64)
    b = champion.reshape(n, -1).astype(np.float64)
    if n > MAX_UNITS:  # pool blocks at random within images: fewer, still independent units
        per = max(1, MAX_UNITS // len(np.unique(images)))
        unit = images * per + rng.integers(0, per, n)
        unit, at = np.unique(unit, return_inverse=True)
        a = np.stack([np.bincount(at, a[:, j], len(unit)) for j in range(a.shape[1])], 1)
        b = np.stack([np.bincount(at, b[:, j], len(unit)) for j in range(b.shape[1])], 1)
        images, n = unit // per, len(unit)
    image_ids, image_of = np.unique(images, return_inverse=True)
    per_image = rng.poisson(1.0, (resamples, len(image_ids))) if len(image_ids) > 1 else \
        np.ones((resamples, 1), np.int64)
    weights = (rng.poisson(1.0, (resamples, n)) * per_image[:, image_of]).astype(np.float64)
    k1 = candidate.shape[-1]

    def mean_dice(flat: np.ndarray) -> np.ndarray:  # over the classes present, as Scores
        dice = dice_iou_from_confusion((weights @ flat).reshape(-1, k1, k1))[0]
        known = np.isfinite(dice)
        count = known.sum(axis=1)
        total = np.where(known, dice, 0.0).sum(axis=1)
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    gains = mean_dice(a) - mean_dice(b)
    gains = gains[np.isfinite(gains)]
    if not gains.size:
        return float("nan"), float("nan")
    return (float(np.quantile(gains, 1.0 - confidence)), float(np.quantile(gains, confidence)))


def enough_to_validate(pixels: Sequence[int], class_names: Sequence[str],
                       minimum: int = MIN_VALIDATION_PIXELS) -> str | None:
    """None when every class has ``minimum`` labeled validation pixels, else why not."""
    short = [f"{name} {n}" for name, n in zip(class_names, pixels, strict=True) if n < minimum]
    if not short:
        return None
    return (f"too few validation pixels to compare honestly (need {minimum} of every class, "
            f"have {', '.join(short)})")


@dataclass(frozen=True)
class ImageCheck:
    """A validation image: the candidate's and the fallback's (Otsu's) mean Dice (all
    classes) on its labeled pixels. Where the candidate won, it may pre-label images like
    this one (:meth:`label_assistant.model.domain.Domain.with_checks`)."""

    name: str
    candidate: float
    fallback: float

    @property
    def won(self) -> bool:
        """At least as good as the fallback on this image."""
        return self.candidate >= self.fallback


def image_checks(names: Sequence[str], truths: Sequence[np.ndarray],
                 candidate: Sequence[np.ndarray], fallback: Sequence[np.ndarray],
                 n_classes: int) -> list[ImageCheck | None]:
    """An :class:`ImageCheck` per validation image (None where it has no score)."""
    checks: list[ImageCheck | None] = []
    for name, truth, mine, theirs in zip(names, truths, candidate, fallback, strict=True):
        a = score([truth], [mine], n_classes).mean_dice
        b = score([truth], [theirs], n_classes).mean_dice
        checks.append(None if a is None or b is None else ImageCheck(str(name), a, b))
    return checks


@dataclass(frozen=True)
class Verdict:
    """Whether a candidate replaces the champion, why, and the scores behind it;
    ``images``: the candidate against the fallback on each validation image."""

    promoted: bool
    reason: str
    champion: str  # the serving version's id (``otsu-...`` for Otsu)
    candidate_scores: Scores | None = None
    champion_scores: Scores | None = None
    images: tuple[ImageCheck, ...] = ()
    #: The gain's bootstrap interval (:func:`gain_interval`), when one was computed.
    gain_interval: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "promoted": self.promoted, "reason": self.reason, "champion": self.champion,
            "candidate_scores": self.candidate_scores and self.candidate_scores.to_dict(),
            "champion_scores": self.champion_scores and self.champion_scores.to_dict(),
            "images": [asdict(check) for check in self.images],
            "gain_interval": None if self.gain_interval is None else list(self.gain_interval),
        }


def decide(candidate: Scores | None, champion: Scores | None, champion_version: str,
           class_names: Sequence[str], *, min_gain: float = 0.0,
           minimum_pixels: int = MIN_VALIDATION_PIXELS,
           interval: tuple[float, float] | None = None) -> Verdict:
    """The candidate serves only if its mean Dice (all classes) beats the champion's by more
    than ``min_gain`` on the same validation pixels, there are enough of them, and, with the
    gain's bootstrap ``interval`` (:func:`gain_interval`), its lower end is above zero too."""
    if candidate is None or champion is None:
        return Verdict(False, "no validation annotations: nothing to compare on",
                       champion_version, candidate, champion)
    too_few = enough_to_validate(candidate.pixels, class_names, minimum_pixels)
    if too_few:
        return Verdict(False, too_few, champion_version, candidate, champion,
                       gain_interval=interval)
    if candidate.mean_dice is None or champion.mean_dice is None:
        return Verdict(False, "no score on the validation pixels", champion_version,
                       candidate, champion, gain_interval=interval)
    gain = candidate.mean_dice - champion.mean_dice
    by_chance = interval is not None and not interval[0] > 0.0
    promoted = gain > min_gain and not by_chance
    verb = "beats" if promoted else "does not beat"
    reason = (f"mean Dice (all classes) {candidate.mean_dice:.4f} {verb} "
              f"{champion_version}'s {champion.mean_dice:.4f} on the same "
              f"{sum(candidate.pixels)} validation pixels")
    if interval is not None:
        chance = ": it could be chance" if by_chance and gain > min_gain else ""
        reason += (f" (gain {gain:+.4f}, lower {CONFIDENCE:.0%} bootstrap bound "
                   f"{interval[0]:+.4f}{chance})")
    return Verdict(promoted, reason, champion_version, candidate, champion,
                   gain_interval=interval)
