"""Pre-assistance before any model exists: intensity normalization and Otsu pre-labels.

Pipeline of :func:`otsu_prelabel` (each step a parameter of :class:`OtsuParams`):

1. grayscale working image: each channel stretched between its 1st and 99.8th percentiles to
   [0, 1] (:func:`gray_normalized`), multi-channel images averaged over their non-constant
   channels (all count alike: fluorescence channels have no luminance weights);
2. optional CLAHE (``equalize``), then a Gaussian blur (``smooth_sigma``) against pixel noise;
3. polarity: ``bright`` objects, ``dark`` objects, or ``auto``: the objects are the phase that
   covers the smaller area after a global Otsu threshold (bright nuclei on a dark background,
   dark membranes on bright EM). With several classes, the background is whichever extreme
   phase (darkest or brightest) is larger. The image is turned so objects are bright;
4. threshold: ``global`` Otsu (multi-Otsu for ``n_classes`` > 1, classes ordered from the
   background outwards: class K is the brightest for bright objects, the darkest for dark), or
   ``local``: the illumination is estimated by a grey opening of ``block_size`` pixels
   (objects narrower than the block vanish from it), smoothed, and subtracted; Otsu then
   thresholds the flattened image, i.e. the threshold follows the background. Unlike a
   local-mean threshold it doesn't turn noise into objects where a block holds no object;
5. clean-up: objects under ``min_size`` pixels -> background; background holes up to
   ``max_hole_size`` pixels (None: any size) filled; with ``separate_touching``, touching
   blobs are split by a watershed on the distance transform (markers: maxima deeper than
   ``split_depth`` pixels) and :func:`label_assistant.labelmap.separate_touching` leaves at
   least one background pixel between objects; fragments under ``min_size`` are dropped.

Confidence, per pixel: ``tanh(d / 0.1)`` where ``d`` is the distance, in normalized-intensity
units, from the pixel's working value to the nearest threshold (0 on the threshold, 0.76 at
0.1 away, 0.96 at 0.2 away). Pixels whose label the clean-up changed get 0: their intensity
says the other thing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

from label_assistant.images import chw_to_hwc, normalize_for_model
from label_assistant.labelmap import separate_touching

POLARITIES = ("auto", "bright", "dark")
METHODS = ("global", "local")
#: Multi-Otsu cost grows combinatorially with the number of classes.
MAX_OTSU_CLASSES = 4
#: Distance from the threshold (normalized intensity) at which confidence reaches tanh(1).
CONFIDENCE_SCALE = 0.1
#: Bump when the algorithm changes in a way that changes outputs for the same parameters.
_ALGORITHM_REVISION = 1
_NBINS = 256  # histogram bins for Otsu

_EIGHT = np.ones((3, 3), dtype=bool)  # objects: 8-connected
_FOUR = ndi.generate_binary_structure(2, 1)  # holes: 4-connected, the complement's rule


class PreLabelError(ValueError):
    """Bad pre-labeling parameters or an image they can't be applied to."""


@dataclass(frozen=True)
class OtsuParams:
    """Parameters of an Otsu pre-label; see the module docstring for each step."""

    polarity: str = "auto"  # "auto" | "bright" | "dark"
    n_classes: int = 1  # foreground classes; > 1 uses multi-Otsu
    method: str = "global"  # "global" | "local"
    block_size: int = 101  # pixels, local method: larger than the objects
    min_size: int = 50  # pixels; smaller objects become background
    fill_holes: bool = True
    max_hole_size: int | None = 64  # pixels; None fills holes of any size
    separate_touching: bool = True
    split_depth: float = 2.0  # pixels of distance-transform depth that make a new marker
    equalize: bool = False  # CLAHE before thresholding
    smooth_sigma: float = 1.0  # Gaussian blur, pixels; 0 = none

    def __post_init__(self) -> None:
        if self.polarity not in POLARITIES:
            raise PreLabelError(f"polarity must be one of {POLARITIES}, got {self.polarity!r}")
        if self.method not in METHODS:
            raise PreLabelError(f"method must be one of {METHODS}, got {self.method!r}")
        if not 1 <= int(self.n_classes) <= MAX_OTSU_CLASSES:
            raise PreLabelError(f"n_classes must be 1..{MAX_OTSU_CLASSES}, got {self.n_classes}")
        if self.block_size < 3:
            raise PreLabelError(f"block_size must be at least 3 pixels, got {self.block_size}")
        if self.min_size < 0:
            raise PreLabelError(f"min_size must be >= 0, got {self.min_size}")
        if self.max_hole_size is not None and self.max_hole_size < 0:
            raise PreLabelError(f"max_hole_size must be >= 0 or None, got {self.max_hole_size}")
        if not self.split_depth > 0:
            raise PreLabelError(f"split_depth must be > 0, got {self.split_depth}")
        if not self.smooth_sigma >= 0:
            raise PreLabelError(f"smooth_sigma must be >= 0, got {self.smooth_sigma}")

    def version_name(self) -> str:
        """``otsu-<8 hex>``: changes whenever any parameter (or the algorithm revision) does."""
        payload = json.dumps(
            {"revision": _ALGORITHM_REVISION, **asdict(self)}, sort_keys=True
        ).encode()
        return f"otsu-{hashlib.sha256(payload).hexdigest()[:8]}"


@dataclass
class PreLabel:
    """A dense pre-label: every pixel is background (0) or a class 1..K (never 255)."""

    label_map: np.ndarray  # uint8 (H, W), 0..K
    confidence: np.ndarray  # float32 (H, W), [0, 1]
    instances: np.ndarray | None  # int32 (H, W): class-1 objects 1..N, 0 elsewhere
    thresholds: tuple[float, ...]  # K values; see otsu_prelabel
    polarity: str  # the one applied: "bright" or "dark"
    version: str  # what produced it, e.g. OtsuParams.version_name()
    #: float32 (K+1, H, W) class probabilities when a model made it (None for Otsu).
    probabilities: np.ndarray | None = None

    @property
    def threshold(self) -> float:
        return self.thresholds[0]

    @property
    def n_objects(self) -> int:
        return 0 if self.instances is None else int(self.instances.max(initial=0))

    @property
    def foreground_fraction(self) -> float:
        return float(np.count_nonzero(self.label_map) / max(self.label_map.size, 1))


# --- intensity -------------------------------------------------------------------------------


def gray_normalized(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """float32 (H, W) in [0, 1]: channels stretched between their percentiles, then averaged.

    Constant channels are left out of the mean (unless all are constant).
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise PreLabelError(f"an image must be (H, W) or (H, W, C), got shape {image.shape}")
    channels = normalize_for_model(image, low, high)
    # A constant channel (an empty colour plane) carries nothing: leave it out of the mean.
    informative = channels.reshape(len(channels), -1).max(axis=1) > 0
    if informative.any():
        channels = channels[informative]
    return channels.mean(axis=0, dtype=np.float32)


def equalize_contrast(gray: np.ndarray, clip_limit: float = 0.01) -> np.ndarray:
    """CLAHE of a [0, 1] grayscale image (scikit-image ``equalize_adapthist``), float32."""
    from skimage.exposure import equalize_adapthist

    if np.ptp(gray) == 0:
        return gray.astype(np.float32)
    return equalize_adapthist(np.clip(gray, 0, 1), clip_limit=clip_limit).astype(np.float32)


def _otsu_thresholds(values: np.ndarray, n_classes: int) -> tuple[float, ...]:
    from skimage.filters import threshold_multiotsu, threshold_otsu

    try:
        if n_classes == 1:
            thresholds = [threshold_otsu(values, nbins=_NBINS)]
        else:
            thresholds = threshold_multiotsu(values, classes=n_classes + 1, nbins=_NBINS)
    except ValueError as error:  # fewer intensity levels than classes
        raise PreLabelError(f"multi-Otsu with {n_classes} classes failed: {error}") from None
    # scikit-image returns the centre of the last histogram bin of the lower class; pixels
    # in that bin belong to the lower class, so the exact boundary is the bin's upper edge.
    half_bin = float(values.max() - values.min()) / (2 * _NBINS)
    return tuple(float(t) + half_bin for t in thresholds)


def auto_polarity(gray: np.ndarray, n_classes: int = 1) -> str:
    """``bright`` or ``dark``: the background is the larger extreme phase after Otsu."""
    if np.ptp(gray) == 0:
        return "bright"
    thresholds = _otsu_thresholds(gray, n_classes)
    darkest = np.count_nonzero(gray <= thresholds[0])
    brightest = np.count_nonzero(gray > thresholds[-1])
    return "bright" if darkest >= brightest else "dark"


def flatten_background(objects_bright: np.ndarray, block_size: int) -> np.ndarray:
    """Image minus its illumination (grey opening of ``block_size``, smoothed), >= 0."""
    import cv2

    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (block_size, block_size))
    image = np.ascontiguousarray(objects_bright, dtype=np.float32)
    background = cv2.morphologyEx(image, cv2.MORPH_OPEN, kernel, borderType=cv2.BORDER_REFLECT)
    background = ndi.gaussian_filter(background, block_size / 6.0, mode="reflect")
    return np.clip(image - background, 0.0, None)


def threshold_confidence(values: np.ndarray, thresholds: tuple[float, ...]) -> np.ndarray:
    """float32 [0, 1]: ``tanh(distance to the nearest threshold / CONFIDENCE_SCALE)``."""
    distance = np.min([np.abs(values - t) for t in thresholds], axis=0)
    return np.tanh(distance / CONFIDENCE_SCALE).astype(np.float32)


# --- clean-up on label maps --------------------------------------------------------------------


def _drop_small(mask: np.ndarray, min_size: int) -> np.ndarray:
    """The mask without 8-connected objects of fewer than ``min_size`` pixels."""
    if min_size <= 1 or not mask.any():
        return mask
    labels, _ = ndi.label(mask, structure=_EIGHT)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


def _fill_holes(label_map: np.ndarray, max_hole_size: int | None) -> np.ndarray:
    """Fill background regions enclosed by objects (up to ``max_hole_size`` pixels).

    A hole takes the class that surrounds most of its border.
    """
    holes, n = ndi.label(label_map == 0, structure=_FOUR)
    if n == 0:
        return label_map
    sizes = np.bincount(holes.ravel(), minlength=n + 1)
    fill = np.ones(n + 1, dtype=bool)
    fill[0] = False
    border = np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]])
    fill[border] = False  # open to the image edge: not a hole
    if max_hole_size is not None:
        fill &= sizes <= max_hole_size
    if not fill.any():
        return label_map
    out = label_map.copy()
    if label_map.max() <= 1:
        out[fill[holes]] = 1
        return out
    for hole_id, box in enumerate(ndi.find_objects(holes), start=1):
        if box is None or not fill[hole_id]:
            continue
        grown = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        hole = holes[grown] == hole_id
        ring = ndi.binary_dilation(hole, structure=_EIGHT) & ~hole
        classes = label_map[grown][ring]
        out[grown][hole] = np.bincount(classes[classes > 0]).argmax()
    return out


def split_touching(mask: np.ndarray, split_depth: float = 2.0) -> np.ndarray:
    """int32 instances of a binary mask, touching blobs split, >= 1 pixel of 0 between objects.

    Watershed of the distance transform from its maxima at least ``split_depth`` deep; an
    object too thin to hold such a maximum stays one object.
    """
    from skimage.segmentation import watershed

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.zeros(mask.shape, np.int32)
    distance = ndi.distance_transform_edt(mask)
    components, count = ndi.label(mask, structure=_EIGHT)
    markers, _ = ndi.label(deep_maxima(distance, components, count, split_depth),
                           structure=_EIGHT)
    has_marker = np.zeros(components.max() + 1, dtype=bool)
    has_marker[components[markers > 0]] = True
    unmarked = mask & ~has_marker[components]
    markers[unmarked] = components[unmarked] + markers.max()
    instances = watershed(-distance, markers, mask=mask)
    return separate_touching(instances).astype(np.int32)


def deep_maxima(distance: np.ndarray, components: np.ndarray, count: int,
                split_depth: float) -> np.ndarray:
    """The h-maxima (``split_depth`` deep) of a mask's distance transform, as
    ``skimage.morphology.h_maxima(distance, split_depth) & mask``, found component by
    component (``components``: the mask's ``count`` labeled components), each on its own box.

    Background (distance 0) separates the components, so the maxima are the same; the
    background's pixels are skipped, and components too shallow to hold such a maximum too.
    Over the whole image, the h-maxima took 70% of Otsu's pre-label of a 1024 x 1024 DSB
    image; this way they are 3.3x faster on 40 DSB 2018 ground-truth masks and 1.9x on
    Otsu's masks of the same images, identical on all 80
    (``benchmarks/bench_split_touching.py``)."""
    from skimage.morphology import h_maxima

    peaks = np.zeros(distance.shape, dtype=bool)
    depth = np.asarray(ndi.maximum(distance, components, np.arange(1, count + 1)))
    boxes = ndi.find_objects(components)
    for k in np.flatnonzero(depth >= split_depth):
        box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in boxes[k])
        own = components[box] == k + 1
        peaks[box] |= h_maxima(np.where(own, distance[box], 0.0), split_depth).astype(bool) & own
    return peaks


def _relabel(instances: np.ndarray) -> np.ndarray:
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(instances)[0].astype(np.int32)


# --- the pre-label -----------------------------------------------------------------------------


def otsu_prelabel(image: np.ndarray, params: OtsuParams | None = None) -> PreLabel:
    """Dense Otsu pre-label of an (H, W) or (H, W, C) image; see the module docstring.

    ``thresholds`` (ascending) are in working-image units: for ``global``, normalized
    intensity in [0, 1] (after CLAHE/blur when on); for ``local``, the contrast above the
    estimated background (in the objects-bright orientation).
    """
    params = params or OtsuParams()
    gray = gray_normalized(image)
    if params.equalize:
        gray = equalize_contrast(gray)
    if params.smooth_sigma > 0:
        gray = ndi.gaussian_filter(gray, params.smooth_sigma, mode="reflect")
    k = int(params.n_classes)
    polarity = params.polarity if params.polarity != "auto" else auto_polarity(gray, k)
    version = params.version_name()
    empty = np.zeros(gray.shape, np.uint8)

    work = gray if polarity == "bright" else 1.0 - gray
    if params.method == "local":
        work = flatten_background(work, params.block_size)
    if np.ptp(work) == 0:  # nothing to threshold: all background, no confidence
        value = float(work.flat[0])
        return PreLabel(empty, np.zeros(gray.shape, np.float32), np.zeros(gray.shape, np.int32),
                        (value,) * k, polarity, version)
    work_thresholds = _otsu_thresholds(work, k)
    raw = np.searchsorted(np.asarray(work_thresholds), work, side="left").astype(np.uint8)
    confidence = threshold_confidence(work, work_thresholds)

    label_map = np.zeros_like(raw)
    for c in range(1, k + 1):
        label_map[_drop_small(raw == c, params.min_size)] = c
    if params.fill_holes:
        label_map = _fill_holes(label_map, params.max_hole_size)
    instances = None
    if params.separate_touching:
        separated = np.zeros_like(label_map)
        for c in range(1, k + 1):
            objects = split_touching(label_map == c, params.split_depth)
            objects[~_drop_small(objects > 0, params.min_size)] = 0
            separated[objects > 0] = c
            if c == 1:
                instances = _relabel(objects)
        label_map = separated
    if instances is None:
        instances = ndi.label(label_map == 1, structure=_EIGHT)[0].astype(np.int32)
    confidence[label_map != raw] = 0.0

    if params.method == "global" and polarity == "dark":
        thresholds = tuple(sorted(1.0 - t for t in work_thresholds))  # back to intensity
    else:
        thresholds = tuple(sorted(work_thresholds))
    return PreLabel(label_map, confidence, instances, thresholds, polarity, version)


class OtsuPrelabeler:
    """Otsu as a pre-labeler, the version that exists before any model: ``version`` names
    it (``otsu-<hash>``), :meth:`prelabel` pre-labels an image. It has no class
    probabilities, so the inspection's model-aware rules do not run against it."""

    def __init__(self, params: OtsuParams | None = None) -> None:
        self.params = params or OtsuParams()
        self.version = self.params.version_name()

    def prelabel(self, image: np.ndarray) -> PreLabel:
        return otsu_prelabel(image, self.params)

    def label_map(self, x: np.ndarray, where: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, None]:
        """``(label map, confidence, None)`` of a model input (float (C, H, W)), as
        :meth:`label_assistant.model.predictor.Predictor.label_map` gives a model's (``where``
        is accepted for the same signature: the threshold is global, the whole image runs)."""
        pre = self.prelabel(chw_to_hwc(x))
        return pre.label_map, pre.confidence, None
