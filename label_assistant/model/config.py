"""Training settings: everything that decides a training run, stored with its version.

Kept free of torch so that the command line can show defaults without importing it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

#: How a training tile's image is drawn (the values of ``TileSampler``'s ``balance``).
TILE_SAMPLINGS = ("image", "pixel")


class TrainingError(ValueError):
    """Training can't start: no examples, no labeled pixels, inconsistent channels."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (stored with the version it makes)."""

    # The CPU default, measured on 2 cores with DSB 2018 nuclei (benchmarks/
    # bench_train_speed.py): a 128-pixel tile takes 0.42 s a step against 2.8 s at 256 and
    # beats Otsu's mean Dice after 50 steps (0.35 min against 2.3 min); channels_last adds
    # 1.6x; mobilenet_v2, efficientnet-b0 and a small mobilenetv3 were faster per step but
    # did not learn in 100 steps. 30 x 10 steps of 8 tiles: about 1.5 minutes.
    arch: str = "Unet"
    encoder: str = "resnet18"
    dropout: float = 0.1
    epochs: int = 30
    steps_per_epoch: int = 10
    batch_size: int = 8
    tile: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    loss: str = "ce+dice"
    class_weights: str | None = None  # None, or "auto" (from labeled-pixel frequencies)
    separate_contours: bool = False  # U-Net paper weight map between close objects
    w0: float = 10.0
    sigma: float = 5.0
    min_labeled_pixels: int = 64
    #: How a training tile's image is drawn (:class:`~label_assistant.model.tiles.
    #: TileSampler`): "image", each image alike, or "pixel", by its labeled pixels. By pixels,
    #: on DSB 2018 a round of 14 bright-field images of 1024 x 1024 and 10 fluorescence
    #: images of 256 x 256 drew 9% of its tiles from the 10 small ones, and its model scored
    #: Dice 0.00 on that group's test images; by image, 0.84 and 0.91, and the mean per-image
    #: Dice over all 9 groups went from 0.11 to 0.43 (``label-assistant simulate`` of
    #: benchmarks/bench_selection_dsb.py, ``--strategies sequential --initial 24 --rounds 0
    #: --tile-sampling image`` or ``pixel``). The 3-seed selection run: README "Which images
    #: first".
    tile_sampling: str = "image"
    max_background_only_share: float = 0.5
    augment: bool = True
    #: Share of annotations held out for validation, by a stable hash of their names.
    val_fraction: float = 0.2
    patience: int = 8  # epochs without improvement before stopping early
    #: Validate every this many epochs, and after the last; the best epoch is chosen among
    #: the validated ones (patience counts them). Validation on whole images can cost more
    #: than an epoch's training: on DSB 2018 (``benchmarks/bench_selection_dsb.py``, 6 to 24
    #: images of up to 1272 px) a round of 8 x 10 steps took 107 s with its first validation
    #: images and 255 s with 7 of them.
    val_every: int = 1
    seed: int = 0
    device: str | None = None  # None = CUDA when present, else CPU
    channels_last: bool = True  # the NHWC memory layout for training (faster on CPU and GPU)
    inference_tile: int = 512
    inference_overlap: int | None = None  # None: model.predictor.overlap_for(tile)
    #: Weight of the champion's pre-label on pixels the annotator left unlabeled (0: off).
    #: Measured on the trial's case (Background only along the borders; tests/
    #: test_partial_labels.py, benchmarks/bench_partial_labels.py): without it the model
    #: paints the interior, 1.0 keeps the champion's background (0.3 does too, a little worse).
    weak_weight: float = 1.0
    #: Start from the champion's weights when it has the same architecture and classes.
    warm_start: bool = True
    #: Epochs of a warm-started round (its own, shorter schedule); None: ``epochs``.
    warm_epochs: int | None = 10
    #: Learning rate of a warm-started round; None: ``lr``. Measured on DSB 2018
    #: (benchmarks/bench_warm_start.py --oracle sparse --warm-lrs 0.001,0.0003: a champion
    #: from 8 images, then 16): at 3e-4 the warm round reached the cold round's best
    #: validation Dice after 68 of the cold round's 206 CPU seconds and scored 0.928 test Dice
    #: (cold 0.913, Otsu 0.919); at the cold rate, 1e-3, it forgot the champion (0.765).
    warm_lr: float | None = 3e-4
    #: Processes training together with DistributedDataParallel, launched by torchrun
    #: (:mod:`label_assistant.model.distributed`): one per GPU (nccl), or CPU processes
    #: (gloo) with fewer GPUs. ``batch_size`` stays the total batch: each process trains on
    #: ``batch_size // nproc`` tiles of it, so it must divide.
    nproc: int = 1

    def __post_init__(self) -> None:
        if self.tile_sampling not in TILE_SAMPLINGS:  # before any image is read
            raise TrainingError(f"tile_sampling must be {' or '.join(TILE_SAMPLINGS)}, got "
                                f"{self.tile_sampling!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise TrainingError(f"unknown training settings: {', '.join(sorted(unknown))}")
        return cls(**data)
