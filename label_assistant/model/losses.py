"""Segmentation losses that ignore unlabeled pixels (partial annotation).

Pure functions on tensors (``logits`` float (N, C, H, W), ``target`` integer (N, H, W) with
``ignore_index`` = unlabeled) with thin ``nn.Module`` wrappers, a registry, and
:func:`make_loss` parsing specs such as ``"ce+dice"`` or ``"0.7*focal+0.3*dice"``.

Conventions shared by every loss here:

- Pixels equal to ``ignore_index`` get exactly zero gradient.
- Reduction: the weighted per-pixel losses are *summed over labeled pixels and divided by the
  number of labeled pixels* (not by the sum of weights, as torch's weighted mean does), so
  class and pixel weights add emphasis instead of only redistributing it, and the U-Net
  weight map acts as in the paper.
- A batch without labeled pixels gives a loss of 0 that is still part of the graph
  (``backward()`` works, every gradient is 0, never NaN).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from torch import nn

from label_assistant.labelmap import UNLABELED


class LossSpecError(ValueError):
    """A loss spec that can't be parsed, or an unknown loss name."""


# ---------------------------------------------------------------------------------------------
# pure functions


def _prepare(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(labeled mask, target with unlabeled pixels set to class 0 so indexing is valid)."""
    if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"need logits (N, C, H, W) and target (N, H, W), got {tuple(logits.shape)} "
            f"and {tuple(target.shape)}"
        )
    target = target.long()
    labeled = target != ignore_index
    return labeled, torch.where(labeled, target, torch.zeros_like(target))


def _pixel_weights(
    target: torch.Tensor,
    class_weights: torch.Tensor | None,
    pixel_weights: torch.Tensor | None,
    dtype: torch.dtype,
) -> torch.Tensor | None:
    """Per-pixel weight: class weight of the pixel's class times its pixel weight."""
    weight = None
    if class_weights is not None:
        weight = torch.as_tensor(class_weights, dtype=dtype, device=target.device)[target]
    if pixel_weights is not None:
        pw = torch.as_tensor(pixel_weights, dtype=dtype, device=target.device)
        weight = pw if weight is None else weight * pw
    return weight


def _labeled_mean(per_pixel: torch.Tensor, labeled: torch.Tensor) -> torch.Tensor:
    # torch.where (not multiplication) so that nothing at unlabeled pixels reaches the graph;
    # clamp_min(1) makes an all-unlabeled batch a differentiable 0 instead of 0/0.
    total = torch.where(labeled, per_pixel, torch.zeros_like(per_pixel)).sum()
    return total / labeled.sum().clamp_min(1)


def _weighted_mean(per_pixel: torch.Tensor, labeled: torch.Tensor, safe: torch.Tensor,
                   class_weights: torch.Tensor | None, pixel_weights: torch.Tensor | None
                   ) -> torch.Tensor:
    """A per-pixel loss times its class and pixel weights, averaged over labeled pixels."""
    weight = _pixel_weights(safe, class_weights, pixel_weights, per_pixel.dtype)
    if weight is not None:
        per_pixel = per_pixel * weight
    return _labeled_mean(per_pixel, labeled)


def masked_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int = UNLABELED,
    class_weights: torch.Tensor | None = None,
    pixel_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax cross-entropy, mean over labeled pixels (weighted by class and pixel weights)."""
    labeled, safe = _prepare(logits, target, ignore_index)
    per_pixel = F.cross_entropy(logits, safe, reduction="none")
    return _weighted_mean(per_pixel, labeled, safe, class_weights, pixel_weights)


def masked_focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int = UNLABELED,
    gamma: float = 2.0,
    class_weights: torch.Tensor | None = None,
    pixel_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017), ``-(1 - p_t)^gamma log p_t``, mean over labeled pixels.

    ``class_weights`` play the role of the paper's alpha; ``gamma=0`` is cross-entropy.
    """
    labeled, safe = _prepare(logits, target, ignore_index)
    log_pt = -F.cross_entropy(logits, safe, reduction="none")
    # clamp: p_t may round above 1, and a negative base would give NaN for non-integer gamma
    per_pixel = -((1.0 - log_pt.exp()).clamp_min(0.0) ** gamma) * log_pt
    return _weighted_mean(per_pixel, labeled, safe, class_weights, pixel_weights)


def masked_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int = UNLABELED,
    smooth: float = 0.0,
    eps: float = 1e-7,
    classes_present_only: bool = True,
    class_weights: torch.Tensor | None = None,
    pixel_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft multi-class Dice loss over labeled pixels, ``1 - mean_c Dice_c``.

    Per class c over the whole batch (as smp does): ``Dice_c = (2 sum p_c g_c + smooth) /
    (sum (p_c + g_c) + smooth)``, sums over labeled pixels only (``p`` = softmax, ``g`` =
    one-hot target). With ``classes_present_only`` the mean runs over the classes present
    among labeled target pixels (a class absent from a partial annotation is not pushed to 0
    everywhere; its false positives still lower the present classes' Dice). ``class_weights``
    weight the mean; ``pixel_weights`` weight each pixel in the sums.
    """
    labeled, safe = _prepare(logits, target, ignore_index)
    n_classes = logits.shape[1]
    probs = logits.softmax(dim=1)
    mask = labeled.unsqueeze(1).to(probs.dtype)
    weight = _pixel_weights(safe, None, pixel_weights, probs.dtype)
    if weight is not None:
        mask = mask * weight.unsqueeze(1)
    onehot = F.one_hot(safe, n_classes).permute(0, 3, 1, 2).to(probs.dtype)
    # where() keeps unlabeled pixels out of the sums: exactly zero gradient there
    probs = torch.where(labeled.unsqueeze(1), probs, torch.zeros_like(probs)) * mask
    onehot = onehot * mask
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    cardinality = (probs + onehot).sum(dims)
    dice = (2.0 * intersection + smooth) / (cardinality + smooth).clamp_min(eps)
    per_class = 1.0 - dice
    if classes_present_only:
        class_mask = (onehot.sum(dims) > 0).to(probs.dtype)
    else:
        class_mask = torch.ones_like(per_class)
    if class_weights is not None:
        class_mask = class_mask * torch.as_tensor(class_weights, dtype=probs.dtype,
                                                  device=probs.device)
    # all classes absent (no labeled pixel): a 0 that still depends on the logits
    return (per_class * class_mask).sum() / class_mask.sum().clamp_min(eps)


# ---------------------------------------------------------------------------------------------
# nn.Module wrappers


class _MaskedLoss(nn.Module):
    """Holds ``ignore_index`` and class weights (a buffer, so ``.to(device)`` moves them)."""

    fn: Callable[..., torch.Tensor]

    def __init__(
        self, *, ignore_index: int = UNLABELED, class_weights: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        weights = None if class_weights is None else torch.as_tensor(
            np.asarray(class_weights, dtype=np.float32) if not torch.is_tensor(class_weights)
            else class_weights.float()
        )
        self.register_buffer("class_weights", weights)

    def _options(self) -> dict:
        return {}

    def forward(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        pixel_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return type(self).fn(
            logits,
            target,
            ignore_index=self.ignore_index,
            class_weights=self.class_weights,
            pixel_weights=pixel_weights,
            **self._options(),
        )


class MaskedCrossEntropyLoss(_MaskedLoss):
    """:func:`masked_cross_entropy` as a module."""

    fn = staticmethod(masked_cross_entropy)


class MaskedFocalLoss(_MaskedLoss):
    """:func:`masked_focal_loss` as a module."""

    fn = staticmethod(masked_focal_loss)

    def __init__(self, *, gamma: float = 2.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.gamma = gamma

    def _options(self) -> dict:
        return {"gamma": self.gamma}


class MaskedDiceLoss(_MaskedLoss):
    """:func:`masked_dice_loss` as a module."""

    fn = staticmethod(masked_dice_loss)

    def __init__(
        self, *, smooth: float = 0.0, classes_present_only: bool = True, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.smooth = smooth
        self.classes_present_only = classes_present_only

    def _options(self) -> dict:
        return {"smooth": self.smooth, "classes_present_only": self.classes_present_only}


class CombinedLoss(nn.Module):
    """Weighted sum ``sum_i w_i * loss_i(logits, target, pixel_weights)``."""

    def __init__(self, terms: Sequence[tuple[float, nn.Module]]) -> None:
        super().__init__()
        if not terms:
            raise LossSpecError("a combined loss needs at least one term")
        self.weights = [float(w) for w, _ in terms]
        self.losses = nn.ModuleList([loss for _, loss in terms])

    def forward(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        pixel_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        total = None
        for w, loss in zip(self.weights, self.losses, strict=True):
            term = w * loss(logits, target, pixel_weights=pixel_weights)
            total = term if total is None else total + term
        return total


# ---------------------------------------------------------------------------------------------
# registry and factory

LOSSES: dict[str, type[_MaskedLoss]] = {
    "ce": MaskedCrossEntropyLoss,
    "focal": MaskedFocalLoss,
    "dice": MaskedDiceLoss,
}

# "[weight*]name", e.g. "0.7*focal", "1e-1 * dice", "ce"
_TERM = re.compile(
    r"^\s*(?:(?P<w>[0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*\*\s*)?(?P<name>[a-z_]+)\s*$"
)


def available_losses() -> list[str]:
    """Names :func:`make_loss` accepts as terms."""
    return sorted(LOSSES)


def make_loss(
    spec: str,
    *,
    ignore_index: int = UNLABELED,
    class_weights: Sequence[float] | torch.Tensor | None = None,
) -> nn.Module:
    """A loss module from a spec: ``"ce"``, ``"ce+dice"``, ``"0.7*focal+0.3*dice"``.

    Terms are ``[weight*]name`` joined by ``+`` (weight 1 when omitted); one unweighted term
    gives that loss itself, otherwise a :class:`CombinedLoss`. Every module is called as
    ``loss(logits, target, pixel_weights=None)``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise LossSpecError(f"empty loss spec {spec!r}")
    terms: list[tuple[float, nn.Module]] = []
    for part in spec.lower().split("+"):
        match = _TERM.match(part)
        if match is None:
            raise LossSpecError(f"can't parse loss term {part.strip()!r} in {spec!r}")
        name = match["name"]
        if name not in LOSSES:
            choices = ", ".join(available_losses())
            raise LossSpecError(f"unknown loss {name!r}; choose from {choices}")
        weight = float(match["w"]) if match["w"] else 1.0
        if not weight > 0 or not math.isfinite(weight):
            raise LossSpecError(f"loss weight must be positive, got {weight} in {spec!r}")
        terms.append(
            (weight, LOSSES[name](ignore_index=ignore_index, class_weights=class_weights))
        )
    if len(terms) == 1 and terms[0][0] == 1.0:
        return terms[0][1]
    return CombinedLoss(terms)


# ---------------------------------------------------------------------------------------------
# weights (numpy side: computed once per training set / image)


def class_weights_from_counts(
    pixel_counts: Sequence[int] | np.ndarray,
    method: str = "median",
    max_weight: float | None = 100.0,
) -> np.ndarray:
    """Class weights from labeled-pixel counts per class (background first).

    ``"median"``: median frequency balancing (Eigen & Fergus 2015), ``w_c = median(f) / f_c``
    with ``f`` the frequencies of the classes that occur: the median class gets 1, rarer
    classes more. ``"sqrt"``: the square root of that, a softer balance. Weights are clipped
    to ``max_weight`` (a class with a handful of pixels would otherwise dominate); classes
    with no pixels get 1 (they never occur as a target in that data).
    """
    counts = np.asarray(pixel_counts, dtype=np.float64)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError("pixel_counts must be a 1-D array of non-negative counts")
    if method not in ("median", "sqrt"):
        raise ValueError(f"unknown class weight method {method!r}; choose median or sqrt")
    weights = np.ones_like(counts)
    present = counts > 0
    if present.any():
        freq = counts[present] / counts[present].sum()
        weights[present] = np.median(freq) / freq
        if method == "sqrt":
            weights = np.sqrt(weights)
    if max_weight is not None:
        weights = np.minimum(weights, max_weight)
    return weights.astype(np.float32)


def _objects(instances: np.ndarray) -> np.ndarray:
    """Connected regions of equal non-zero value (255 in a uint8 label map is not an object)."""
    from skimage.measure import label

    values = np.asarray(instances)
    if values.ndim != 2:
        raise ValueError("an instance map must be 2-D")
    if values.dtype == np.uint8:
        values = np.where(values == UNLABELED, 0, values)
    # per value, so touching instances with different ids stay different objects
    return label(values, background=0, connectivity=2)


def unet_weight_map(
    instances: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_balance: bool = False,
    cutoff: float | None = None,
) -> np.ndarray:
    """U-Net paper weight map (Ronneberger et al. 2015), float32 H x W, for ``pixel_weights``.

    ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))`` on background pixels, with
    d1, d2 the distances to the nearest and second-nearest object; ``w(x) = w_c(x)`` on objects.
    ``w_c`` is 1, or with ``class_balance`` the median-frequency weight of background vs
    objects. Objects are connected regions of equal non-zero value, so an instance map or a
    label map (255 = not an object) both work; in a label map, touching objects of one class
    are one object. Only objects within ``cutoff`` (default: where the term falls below
    ``w0 / 1000``) are considered: each object's distance transform is computed in its
    bounding box grown by ``cutoff``.
    """
    objects = _objects(instances)
    shape = objects.shape
    if cutoff is None:
        cutoff = sigma * math.sqrt(2.0 * math.log(1000.0))
    reach = int(math.ceil(cutoff))
    d1 = np.full(shape, np.inf, np.float32)
    d2 = np.full(shape, np.inf, np.float32)
    for index, box in enumerate(ndi.find_objects(objects), start=1):
        if box is None:
            continue
        window = tuple(
            slice(max(s.start - reach, 0), min(s.stop + reach, n))
            for s, n in zip(box, shape, strict=True)
        )
        # distance to this object only: the object is whole inside its grown box, so exact
        dist = ndi.distance_transform_edt(objects[window] != index).astype(np.float32)
        a, b = d1[window], d2[window]
        b[:] = np.minimum(b, np.maximum(a, dist))
        a[:] = np.minimum(a, dist)
    # d1 + d2 <= cutoff implies both lie within reach, so both were computed exactly there;
    # beyond it the term is dropped everywhere (not only where d2 happened to be seen).
    total = d1 + d2
    near = (objects == 0) & (total <= cutoff)
    border = np.zeros(shape, np.float32)
    border[near] = w0 * np.exp(-(total[near] ** 2) / (2.0 * sigma**2))
    weights = np.ones(shape, np.float32)
    if class_balance:
        labeled = np.ones(shape, bool)
        if np.asarray(instances).dtype == np.uint8:
            labeled = np.asarray(instances) != UNLABELED
        counts = [np.count_nonzero(labeled & (objects == 0)), np.count_nonzero(objects > 0)]
        w_bg, w_fg = class_weights_from_counts(counts, max_weight=None)
        weights = np.where(objects > 0, w_fg, w_bg).astype(np.float32)
    return (weights + border).astype(np.float32)
