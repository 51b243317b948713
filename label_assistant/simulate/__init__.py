"""The oracle active-learning experiment: how well does each selection strategy spend labels?

Images with complete ground-truth masks play the unlabeled pool; an oracle annotates what a
strategy selects. Everything else is the project's real code, the same the backend runs:

1. **select**: round 0 takes ``initial`` images by the strategy's model-free part
   (``sequence+entropy`` -> ``sequence``, ``entropy+diversity`` -> ``diversity`` on image
   descriptors, a bare score -> ``random``); later rounds score the unlabeled pool with the
   last round's model (:mod:`label_assistant.selectors.pool`: ``predict_proba``, scores,
   embeddings) and rank it (:func:`label_assistant.selectors.rank`), ``per_round`` images.
2. **pre-label**: Otsu (:func:`~label_assistant.assist.pre.otsu_prelabel`) before any model,
   the last model's prediction after; its Dice against the truth is recorded (how much the
   annotator had to correct).
3. **annotate**: the oracle's annotation is the ground truth (``dense``) or
   :func:`~label_assistant.model.sparsify.sparsify` of it (``sparse``: whole objects plus a
   band of context, about ``sparse_fraction`` of the pixels; seeded per run seed and image,
   so every strategy sees the same annotation of an image).
4. **post-assist and gate**: :func:`~label_assistant.assist.post.cleanup`, then
   :func:`~label_assistant.assist.inspect.inspect` with the last model's probabilities;
   quarantined annotations never train.
5. **train** a fresh model on every admitted annotation so far (:func:`model.train.train`,
   the same config each round, the run seed as training seed) and **evaluate** Dice/IoU on
   the held-out test images (:func:`model.train.evaluate`, tiled ``predict_proba``).

Each round records the test Dice of what serves and of the round's candidate as a model of its
own (what the selected images taught it), each test image's Dice too. Groups (experiments,
videos, stacks) come from ``--groups`` (a name,group CSV), a file-name pattern, clusters of the
image descriptors or contiguous chunks; ``--test-split stratified:N`` holds N of each group out.
The reports compare every strategy with random, paired by seed, with 95% intervals.

Rounds 0..R give ``initial + r * per_round`` annotated images. A **full-data** baseline (every
pool image, dense, through the same gate and training) runs once per seed.

Resumable: each finished (strategy, seed, round) is appended to ``OUT/runs.jsonl`` with what
the next round needs (the images already selected and annotated for it), so a rerun skips
finished work and continues an interrupted run at its next round without any stored model.
``OUT/settings.json`` holds the experiment's settings and their hash; a rerun with different
settings (other than the strategy list, the seeds and the device, which may grow or change)
is refused. Reports: ``results.csv``, ``results.json``, ``dice_vs_images.png``,
``dice_vs_pixels.png`` and ``summary.md``, rewritten after every finished run.
"""

from label_assistant.simulate.data import Dataset, load_dataset, parse_test_split, sequence_chunks
from label_assistant.simulate.loop import RunStore, Simulation, initial_strategy, run_simulation
from label_assistant.simulate.oracle import Intake
from label_assistant.simulate.reports import curves, summarize, write_reports
from label_assistant.simulate.settings import (
    FULL_DATA,
    SimulationError,
    SimulationSettings,
    settings_hash,
)

__all__ = [
    "FULL_DATA", "Dataset", "Intake", "RunStore", "Simulation", "SimulationError",
    "SimulationSettings", "curves", "initial_strategy", "load_dataset", "parse_test_split",
    "run_simulation", "sequence_chunks", "settings_hash", "summarize", "write_reports",
]
