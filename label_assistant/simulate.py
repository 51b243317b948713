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

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from label_assistant.datasets import Example, content_hash, load_example, pair_files
from label_assistant.labelmap import UNLABELED, labeled_pixel_counts
from label_assistant.metrics import confusion_matrix, dice_iou_from_confusion
from label_assistant.model.registry import json_default

FULL_DATA = "full-data"
ANNOTATIONS = ("dense", "sparse")
RUNS_FILE = "runs.jsonl"
SETTINGS_FILE = "settings.json"

Log = Callable[[str], None]


class SimulationError(ValueError):
    """Settings or data the experiment can't run with; the message is one line."""


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class SimulationSettings:
    """What decides the experiment. ``train`` holds :class:`TrainConfig` fields (no device)."""

    strategies: tuple[str, ...]
    initial: int
    per_round: int
    rounds: int
    seeds: tuple[int, ...] = (0,)
    annotation: str = "dense"
    sparse_fraction: float = 0.1
    mask_type: str = "binary"
    invert: bool = False
    sequence_regex: str | None = None
    sequence_chunks: int | None = None
    test_split: str = "last:10"
    tta: bool = False
    mc_samples: int = 0
    train: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from label_assistant.selectors import StrategyError, parse_strategy
        from label_assistant.selectors.pool import PoolError, check_strategy

        names = []
        for name in self.strategies:
            try:
                spec = parse_strategy(name)
                check_strategy(spec.name, has_model=True, tta=self.tta,
                               mc_samples=self.mc_samples)
            except (StrategyError, PoolError) as error:
                raise SimulationError(str(error)) from None
            names.append(spec.name)
        if not names:
            raise SimulationError("name at least one strategy")
        if len(set(names)) != len(names):
            raise SimulationError(f"a strategy is named twice: {', '.join(names)}")
        object.__setattr__(self, "strategies", tuple(names))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        self._check_numbers()

    def _check_numbers(self) -> None:
        if self.initial < 1 or self.rounds < 0 or (self.rounds > 0 and self.per_round < 1):
            raise SimulationError("need --initial >= 1, --rounds >= 0 and --per-round >= 1")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise SimulationError("seeds must be distinct and at least one")
        if self.annotation not in ANNOTATIONS:
            raise SimulationError(f"--annotation must be one of {', '.join(ANNOTATIONS)}")
        if not 0.0 < self.sparse_fraction <= 1.0:
            raise SimulationError(f"--sparse-fraction must be in (0, 1], got "
                                  f"{self.sparse_fraction}")
        if self.sequence_regex is not None and self.sequence_chunks is not None:
            raise SimulationError("use --sequence-regex or --sequence-chunks, not both")
        if self.mc_samples < 0:
            raise SimulationError(f"--mc-samples must be >= 0, got {self.mc_samples}")

    @property
    def budgets(self) -> list[int]:
        """Annotated images after each round."""
        return [self.initial + r * self.per_round for r in range(self.rounds + 1)]

    def experiment(self) -> dict[str, Any]:
        """The settings that must match to resume (strategies and seeds may change)."""
        data = asdict(self)
        del data["strategies"], data["seeds"]
        return data

    def train_config(self, seed: int, device: str | None) -> Any:
        from label_assistant.model.config import TrainConfig, TrainingError

        try:
            return TrainConfig.from_dict({**self.train, "seed": seed, "device": device})
        except (TrainingError, TypeError) as error:
            raise SimulationError(str(error)) from None


def settings_hash(experiment: dict[str, Any]) -> str:
    text = json.dumps(experiment, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# ---------------------------------------------------------------- data


@dataclass
class Dataset:
    """The pool (name order) and test images, ground truth included, and the pool's sequences."""

    pool: list[Example]
    test: list[Example]
    sequences: list[str | None]
    class_names: list[str]  # background first

    @property
    def n_classes(self) -> int:
        return len(self.class_names) - 1

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the data in the settings hash."""
        digest = hashlib.sha256()
        for e in self.pool + self.test:
            digest.update(f"{e.name}:{e.content_hash};".encode())
        return {"pool": len(self.pool), "test": [e.name for e in self.test],
                "data_hash": digest.hexdigest()[:12]}


def parse_test_split(spec: str, names: Sequence[str]) -> list[int]:
    """Indices of the test images among ``names`` (name order).

    ``last:N`` / ``first:N``: the last / first N; ``every:N``: positions 0, N, 2N, ...;
    ``list:a,b``: these images (file name or stem). At least one image must stay in the pool.
    """
    kind, _, value = str(spec).partition(":")
    n = len(names)
    if kind in ("last", "first", "every"):
        if not re.fullmatch(r"\d+", value) or int(value) < 1:
            raise SimulationError(f"test split {spec!r}: {kind} needs a positive count, "
                                  f"like {kind}:3")
        k = int(value)
        if kind == "last":
            chosen = list(range(max(n - k, 0), n))
        elif kind == "first":
            chosen = list(range(min(k, n)))
        else:
            chosen = list(range(0, n, k))
    elif kind == "list":
        chosen = _named(value, names, spec)
    else:
        raise SimulationError(f"test split {spec!r}: use last:N, first:N, every:N or list:a,b,c")
    if not chosen:
        raise SimulationError(f"test split {spec!r} selects no image")
    if len(chosen) >= n:
        raise SimulationError(f"test split {spec!r} leaves no image for the pool ({n} images)")
    return chosen


def _named(value: str, names: Sequence[str], spec: str) -> list[int]:
    index = {}
    for i, name in enumerate(names):
        index[name] = i
        index.setdefault(Path(name).stem, i)
    wanted = [v.strip() for v in value.split(",") if v.strip()]
    missing = [v for v in wanted if v not in index]
    if missing:
        raise SimulationError(f"test split {spec!r}: no image named {missing[0]!r}")
    return sorted({index[v] for v in wanted})


def sequence_chunks(n: int, chunks: int) -> list[str]:
    """Sequence ids cutting ``n`` ordered images into ``chunks`` contiguous runs (sizes differ
    by at most one, the longer ones first): a single z-stack or movie as several sequences."""
    if not 1 <= chunks <= n:
        raise SimulationError(f"--sequence-chunks must be in 1..{n} (pool images), got {chunks}")
    width = len(str(chunks))
    ids: list[str] = []
    for c, part in enumerate(np.array_split(np.arange(n), chunks), start=1):
        ids.extend([f"chunk{c:0{width}d}"] * len(part))
    return ids


def load_dataset(
    images: Sequence[Path], masks: Sequence[Path], settings: SimulationSettings,
    progress: Callable[[Any], Any] | None = None,
) -> Dataset:
    """Pair, read and split the data; sequences from the regex or the chunks."""
    from label_assistant.datasets import DatasetError
    from label_assistant.images import ImageError
    from label_assistant.selectors.sequences import SequencePatternError, sequence_ids

    try:
        pairs = pair_files(list(images), list(masks))
        pairs = progress(pairs) if progress is not None else pairs
        examples = [load_example(i, m, settings.mask_type, settings.invert) for i, m in pairs]
    except (DatasetError, ImageError) as error:
        raise SimulationError(str(error)) from None
    test_index = set(parse_test_split(settings.test_split, [e.name for e in examples]))
    pool = [e for i, e in enumerate(examples) if i not in test_index]
    test = [e for i, e in enumerate(examples) if i in test_index]
    if settings.budgets[-1] > len(pool):
        raise SimulationError(
            f"the last round needs {settings.budgets[-1]} images but the pool has {len(pool)}"
        )
    if settings.sequence_chunks is not None:
        sequences: list[str | None] = list(sequence_chunks(len(pool), settings.sequence_chunks))
    else:
        try:
            sequences = list(sequence_ids([e.name for e in pool], regex=settings.sequence_regex))
        except SequencePatternError as error:
            raise SimulationError(str(error)) from None
    k = max(int(e.label_map[e.label_map != UNLABELED].max(initial=0)) for e in examples)
    return Dataset(pool, test, sequences, ["Background", *[f"Class{i}" for i in
                                                           range(1, max(k, 1) + 1)]])


# ---------------------------------------------------------------- one annotation: the real path


@dataclass
class Intake:
    """Images that entered in one round: how they were selected, pre-labeled and gated."""

    names: list[str]
    admitted: list[str]
    quarantined: list[str]
    select_seconds: float = 0.0
    prelabel_source: str | None = None
    prelabel_dice: float | None = None
    warnings: int = 0


def foreground_dice(truth: np.ndarray, prediction: np.ndarray, n_classes: int) -> float | None:
    """Mean Dice of classes 1..K over labeled pixels (None when no class occurs in either)."""
    dice = dice_iou_from_confusion(confusion_matrix(truth, prediction, n_classes))[0][1:]
    return float(np.nanmean(dice)) if np.isfinite(dice).any() else None


def oracle_annotation(example: Example, settings: SimulationSettings, seed: int,
                      index: int, dense: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """The oracle's label map (and instances restricted to it) for pool image ``index``."""
    from label_assistant.model.sparsify import sparsify

    if dense or settings.annotation == "dense":
        return example.label_map, example.instances
    # Seeded by run seed and image: every strategy gets the same annotation of an image.
    label_map = sparsify(example.label_map, settings.sparse_fraction,
                         seed=np.random.default_rng([seed, index]))
    instances = None
    if example.instances is not None:
        instances = np.where(label_map != UNLABELED, example.instances, 0)
    return label_map, instances


def cleaned_example(example: Example, label_map: np.ndarray,
                    instances: np.ndarray | None) -> Example:
    """Post-assistance cleanup of an annotation, as the training example it becomes."""
    from label_assistant.assist.post import cleanup

    result = cleanup(label_map, instances=instances)
    return replace(example, label_map=result.label_map, instances=result.instances,
                   content_hash=content_hash(example.image, result.label_map))


def overlap_for(tile: int) -> int:
    """Tile overlap for inference: 64 pixels at the default 512 tile, less for small tiles."""
    return min(64, tile // 8)


def prelabel(example: Example, model: Any | None, n_classes: int, device: Any,
             tile: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Pre-label map (and the model's probabilities) the annotator would start from."""
    if model is None:
        from label_assistant.assist.pre import OtsuParams, otsu_prelabel

        image = np.moveaxis(example.image, 0, -1)
        image = image[..., 0] if image.shape[-1] == 1 else image
        return otsu_prelabel(image, OtsuParams(n_classes=n_classes)).label_map, None
    from label_assistant.model.inference import predict_proba, probabilities_to_label_map

    probabilities = predict_proba(model, example.image, tile=tile, overlap=overlap_for(tile),
                                  device=device).probabilities
    return probabilities_to_label_map(probabilities)[0], probabilities


# ---------------------------------------------------------------- progress file


class RunStore:
    """``OUT/settings.json`` (checked on open) and the append-only ``OUT/runs.jsonl``."""

    def __init__(self, out: Path, experiment: dict[str, Any]) -> None:
        self.out = Path(out)
        self.hash = settings_hash(experiment)
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / SETTINGS_FILE
        if path.exists():
            stored = json.loads(path.read_text())
            if stored.get("hash") != self.hash:
                raise SimulationError(
                    f"{self.out} holds a run with other settings (differ: "
                    f"{_differences(stored.get('experiment', {}), experiment)}); "
                    "use another --out or remove that folder"
                )
        else:
            _write_atomic(path, json.dumps({"hash": self.hash, "experiment": experiment},
                                           indent=2, default=str) + "\n")
        self.rows = self._read()

    def _read(self) -> list[dict[str, Any]]:
        path = self.out / RUNS_FILE
        if not path.exists():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a kill: that step runs again
        return rows

    def done(self, strategy: str, seed: int) -> list[dict[str, Any]]:
        """Finished rounds of one run, in round order (one row per round)."""
        found = {r["round"]: r for r in self.rows if r["strategy"] == strategy
                 and r["seed"] == seed}
        return [found[k] for k in sorted(found)]

    def append(self, row: dict[str, Any]) -> None:
        with open(self.out / RUNS_FILE, "a") as f:
            f.write(json.dumps(row, default=json_default) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows.append(json.loads(json.dumps(row, default=json_default)))


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(k for k in set(old) | set(new)
                  if json.dumps(old.get(k), sort_keys=True, default=str)
                  != json.dumps(new.get(k), sort_keys=True, default=str))
    return ", ".join(keys) or "unknown"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------- the experiment


def initial_strategy(strategy: str) -> str:
    """The strategy's model-free part (round 0 has no model): its sequence and diversity
    parts; a baseline itself; ``random`` for a bare score."""
    from label_assistant.selectors import parse_strategy

    spec = parse_strategy(strategy)
    if spec.baseline:
        return spec.name
    spec = replace(spec, score=None)
    return spec.name or "random"


@dataclass
class RunState:
    """One (strategy, seed) run between rounds: what is annotated and what came in last."""

    annotated: list[str]
    admitted: list[str]
    quarantined: list[str]
    intake: Intake

    def to_dict(self) -> dict[str, Any]:
        return {"annotated": self.annotated, "admitted": self.admitted,
                "quarantined": self.quarantined, "intake": asdict(self.intake)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        return cls(list(data["annotated"]), list(data["admitted"]), list(data["quarantined"]),
                   Intake(**data["intake"]))


class Simulation:
    """Runs every (strategy, seed) oracle loop and the full-data baselines into ``out``."""

    def __init__(self, data: Dataset, settings: SimulationSettings, out: Path, *,
                 device: str | None = None, log: Log | None = None) -> None:
        from label_assistant.model.inference import default_device

        self.data = data
        self.settings = settings
        self.device = str(device or default_device())
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.store = RunStore(out, {**settings.experiment(), "data": data.fingerprint()})
        self.out = self.store.out
        self.index = {e.name: i for i, e in enumerate(data.pool)}
        self.tile = int(settings.train_config(0, None).inference_tile)
        self._steps_done = 0
        self._step_seconds: list[float] = []

    # --- driving ------------------------------------------------------------------------

    @property
    def total_steps(self) -> int:
        s = self.settings
        return len(s.seeds) * (1 + len(s.strategies) * (s.rounds + 1))

    def run(self) -> list[dict[str, Any]]:
        """Every missing step; returns the result rows of the current strategies and seeds."""
        self._steps_done = len(self.rows())
        if self._steps_done:
            self.log(f"resuming: {self._steps_done} of {self.total_steps} steps already done "
                     f"in {self.out}")
        for seed in self.settings.seeds:
            self._run_full_data(seed)
            for strategy in self.settings.strategies:
                self._run_strategy(strategy, seed)
                write_reports(self.out, self.rows(), self.settings, self.data)
        write_reports(self.out, self.rows(), self.settings, self.data)
        return self.rows()

    def rows(self) -> list[dict[str, Any]]:
        """Finished rows of the strategies and seeds asked for (the file may hold more)."""
        wanted = {*self.settings.strategies, FULL_DATA}
        return [r for r in self.store.rows
                if r["strategy"] in wanted and r["seed"] in self.settings.seeds]

    def _run_full_data(self, seed: int) -> None:
        if self.store.done(FULL_DATA, seed):
            return
        names = [e.name for e in self.data.pool]
        intake = self.intake(names, None, seed, dense=True, prelabels=False)
        state = RunState(names, intake.admitted, intake.quarantined, intake)
        self._round(FULL_DATA, seed, 0, state, select_next=False)

    def _run_strategy(self, strategy: str, seed: int) -> None:
        done = self.store.done(strategy, seed)
        last_round = self.settings.rounds
        if done and done[-1]["round"] >= last_round:
            return
        if done:  # resume: the last finished round stored the next round's intake
            state, start = RunState.from_dict(done[-1]["next"]), done[-1]["round"] + 1
        else:
            state, start = self._first_round(strategy, seed), 0
        for r in range(start, last_round + 1):
            next_state = self._round(strategy, seed, r, state, select_next=r < last_round)
            if next_state is not None:
                state = next_state

    # --- one round ------------------------------------------------------------------------

    def _first_round(self, strategy: str, seed: int) -> RunState:
        from label_assistant.selectors import rank
        from label_assistant.selectors.pool import pool_from_images

        started = time.perf_counter()
        first = initial_strategy(strategy)
        pool = pool_from_images(((e.name, e.image) for e in self.data.pool), strategy=first,
                                sequences=self.data.sequences)
        names = [item.name for item in rank(pool, first, self.settings.initial, seed=seed * 1000)]
        seconds = time.perf_counter() - started
        intake = self.intake(names, None, seed)
        intake.select_seconds = round(seconds, 3)
        return RunState(names, intake.admitted, intake.quarantined, intake)

    def _next_round(self, strategy: str, seed: int, r: int, state: RunState,
                    model: Any | None) -> RunState:
        """Select the next images with this round's model, pre-label, annotate, gate."""
        from label_assistant.selectors import rank
        from label_assistant.selectors.pool import pool_from_images

        started = time.perf_counter()
        annotated = set(state.annotated)
        labeled = np.array([e.name in annotated for e in self.data.pool])
        # No model (nothing admitted yet): the model-free part chooses, as in round 0.
        name = strategy if model is not None else initial_strategy(strategy)
        pool = pool_from_images(
            ((e.name, e.image) for e in self.data.pool), model=model, strategy=name,
            sequences=self.data.sequences, labeled=labeled, tta=self.settings.tta,
            mc_samples=self.settings.mc_samples, device=self.device, tile=self.tile,
            overlap=overlap_for(self.tile),
        )
        picks = rank(pool, name, self.settings.per_round, seed=seed * 1000 + r + 1)
        seconds = time.perf_counter() - started
        names = [item.name for item in picks]
        intake = self.intake(names, model, seed)
        intake.select_seconds = round(seconds, 3)
        return RunState(state.annotated + names, state.admitted + intake.admitted,
                        state.quarantined + intake.quarantined, intake)

    def intake(self, names: list[str], model: Any | None, seed: int, *, dense: bool = False,
               prelabels: bool = True) -> Intake:
        """Pre-label, oracle-annotate, clean and gate ``names``."""
        from label_assistant.assist.inspect import InspectionContext, inspect

        admitted, quarantined, dice, warnings = [], [], [], 0
        for name in names:
            example = self.data.pool[self.index[name]]
            probabilities = None
            if prelabels:
                pre, probabilities = prelabel(example, model, self.data.n_classes,
                                              self.device, self.tile)
                dice.append(foreground_dice(example.label_map, pre, self.data.n_classes))
            cleaned = self._annotation(name, seed, dense)
            report = inspect(InspectionContext(
                label_map=cleaned.label_map, n_classes=self.data.n_classes,
                class_names=self.data.class_names[1:], image_shape=cleaned.label_map.shape,
                instances=cleaned.instances, probabilities=probabilities,
            ))
            warnings += len(report.warnings)
            (admitted if report.admitted else quarantined).append(name)
        known = [d for d in dice if d is not None]
        return Intake(
            names=list(names), admitted=admitted, quarantined=quarantined,
            prelabel_source=None if not prelabels else ("model" if model is not None
                                                        else "otsu"),
            prelabel_dice=round(float(np.mean(known)), 5) if known else None,
            warnings=warnings,
        )

    def _annotation(self, name: str, seed: int, dense: bool = False) -> Example:
        """The cleaned oracle annotation of a pool image (deterministic: resume rebuilds it)."""
        index = self.index[name]
        example = self.data.pool[index]
        label_map, instances = oracle_annotation(example, self.settings, seed, index, dense)
        return cleaned_example(example, label_map, instances)

    def _round(self, strategy: str, seed: int, r: int, state: RunState, *,
               select_next: bool) -> RunState | None:
        """Train on the admitted annotations, evaluate, select and take in the next images
        (``select_next``), append the row; returns the next round's state."""
        started = time.perf_counter()
        dense = strategy == FULL_DATA
        examples = [self._annotation(n, seed, dense) for n in state.admitted]
        model, trained = self._train(examples, seed)
        row = self._row(strategy, seed, r, state, examples, trained, self._evaluate(model))
        next_state = None
        if select_next:
            next_state = self._next_round(strategy, seed, r, state, model)
            row["next"] = next_state.to_dict()
        self.store.append(row)
        self._progress(row, time.perf_counter() - started)
        return next_state

    def _train(self, examples: list[Example], seed: int) -> tuple[Any | None, dict[str, Any]]:
        from label_assistant.model.config import TrainingError
        from label_assistant.model.factory import ModelSpec, create_model
        from label_assistant.model.train import train

        if not examples:
            return None, {"error": "no admitted annotation"}
        config = self.settings.train_config(seed, self.device)
        try:
            result = train(examples, self.data.class_names, config)
        except TrainingError as error:
            return None, {"error": str(error)}
        model = create_model(ModelSpec.from_dict(result.spec))
        model.load_state_dict(result.state_dict)
        model.to(self.device).eval()
        return model, {"train_seconds": round(result.seconds, 3),
                       "epochs_run": result.metrics["epochs_run"],
                       "best_epoch": result.metrics["best_epoch"]}

    def _evaluate(self, model: Any | None) -> dict[str, Any]:
        from label_assistant.model.train import evaluate

        if model is None:
            return {"test_dice": None, "test_iou": None, "test_dice_per_class": None}
        started = time.perf_counter()
        metrics = evaluate(model, self.data.test, self.data.n_classes, device=self.device,
                           tile=self.tile)
        fg_iou = [v for v in metrics["iou"][1:] if v is not None]
        return {"test_dice": metrics["mean_dice"],
                "test_iou": float(np.mean(fg_iou)) if fg_iou else None,
                "test_dice_per_class": metrics["dice"][1:],
                "eval_seconds": round(time.perf_counter() - started, 3)}

    def _row(self, strategy: str, seed: int, r: int, state: RunState,
             examples: list[Example], trained: dict[str, Any],
             test: dict[str, Any]) -> dict[str, Any]:
        pixels = sum(int(labeled_pixel_counts(e.label_map, self.data.n_classes).sum())
                     for e in examples)
        pool_pixels = sum(e.label_map.size for e in self.data.pool)
        return {
            "strategy": strategy, "seed": seed, "round": r,
            "labeled_images": len(state.annotated), "admitted": len(state.admitted),
            "quarantined": len(state.quarantined), "labeled_pixels": pixels,
            "labeled_pixel_share": round(pixels / pool_pixels, 6),
            **test,
            "train_seconds": trained.get("train_seconds"),
            "select_seconds": state.intake.select_seconds,
            "epochs_run": trained.get("epochs_run"),
            "prelabel_source": state.intake.prelabel_source,
            "prelabel_dice": state.intake.prelabel_dice,
            "inspection_warnings": state.intake.warnings,
            "new_images": state.intake.names, "quarantined_images": state.quarantined,
            "error": trained.get("error"),
            "settings_hash": self.store.hash,
        }

    def _progress(self, row: dict[str, Any], seconds: float) -> None:
        self._steps_done += 1
        self._step_seconds.append(seconds)
        left = self.total_steps - self._steps_done
        eta = left * float(np.mean(self._step_seconds))
        dice = row["test_dice"]
        what = "full data" if row["strategy"] == FULL_DATA else \
            f"{row['strategy']} round {row['round']}/{self.settings.rounds}"
        self.log(
            f"[{self._steps_done}/{self.total_steps}] seed {row['seed']} {what}: "
            f"{row['labeled_images']} images ({row['quarantined']} quarantined), test Dice "
            + (f"{dice:.4f}" if dice is not None else f"- ({row['error']})")
            + f", {seconds:.0f} s; about {_duration(eta)} left"
        )


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


# ---------------------------------------------------------------- reports

CSV_COLUMNS = (
    "strategy", "seed", "round", "labeled_images", "admitted", "quarantined", "labeled_pixels",
    "labeled_pixel_share", "test_dice", "test_iou", "train_seconds", "select_seconds",
    "eval_seconds", "epochs_run", "prelabel_source", "prelabel_dice", "inspection_warnings",
    "error",
)


def _stats(values: list[float | None]) -> tuple[float | None, float | None, int]:
    known = [v for v in values if v is not None]
    if not known:
        return None, None, 0
    sd = float(np.std(known, ddof=1)) if len(known) > 1 else 0.0
    return float(np.mean(known)), sd, len(known)


def curves(rows: list[dict[str, Any]], strategies: Sequence[str]) -> dict[str, list[dict]]:
    """Per strategy and round: images, mean labeled pixels, Dice mean/sd over seeds."""
    out: dict[str, list[dict]] = {}
    for strategy in strategies:
        by_round: dict[int, list[dict[str, Any]]] = {}
        for r in rows:
            if r["strategy"] == strategy:
                by_round.setdefault(r["round"], []).append(r)
        points = []
        for rnd in sorted(by_round):
            group = by_round[rnd]
            mean, sd, n = _stats([g["test_dice"] for g in group])
            points.append({
                "round": rnd, "images": float(np.mean([g["labeled_images"] for g in group])),
                "pixels": float(np.mean([g["labeled_pixels"] for g in group])),
                "dice_mean": mean, "dice_sd": sd, "seeds": n,
            })
        out[strategy] = points
    return out


def write_reports(out: Path, rows: list[dict[str, Any]], settings: SimulationSettings,
                  data: Dataset) -> None:
    """results.csv, results.json, the two learning-curve PNGs and summary.md."""
    out = Path(out)
    ordered = sorted(rows, key=lambda r: (r["strategy"] != FULL_DATA, r["strategy"], r["seed"],
                                          r["round"]))
    _write_csv(out / "results.csv", ordered)
    summary = summarize(rows, settings)
    _write_atomic(out / "results.json", json.dumps(
        {"settings": {**asdict(settings), "data": data.fingerprint()},
         "rows": [{k: v for k, v in r.items() if k != "next"} for r in ordered],
         "curves": curves(rows, [FULL_DATA, *settings.strategies]), "summary": summary},
        indent=2, default=json_default) + "\n")
    plot_curves(out, rows, settings)
    _write_atomic(out / "summary.md", summary_markdown(summary, settings, data))


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def summarize(rows: list[dict[str, Any]], settings: SimulationSettings) -> dict[str, Any]:
    """Full-data Dice, and per strategy and budget: Dice mean/sd and share of full data."""
    full_mean, full_sd, full_n = _stats([r["test_dice"] for r in rows
                                         if r["strategy"] == FULL_DATA])
    table = []
    for strategy, points in curves(rows, settings.strategies).items():
        for p in points:
            share = (p["dice_mean"] / full_mean if p["dice_mean"] is not None and full_mean
                     else None)
            table.append({"strategy": strategy, "round": p["round"], "images": p["images"],
                          "pixels": p["pixels"], "dice_mean": p["dice_mean"],
                          "dice_sd": p["dice_sd"], "seeds": p["seeds"], "share_of_full": share})
    return {"full_data": {"dice_mean": full_mean, "dice_sd": full_sd, "seeds": full_n},
            "table": table, "best_final": _best_final(table, settings)}


def _best_final(table: list[dict[str, Any]], settings: SimulationSettings) -> dict | None:
    final = [t for t in table if t["round"] == settings.rounds and t["dice_mean"] is not None]
    if not final:
        return None
    best = max(final, key=lambda t: t["dice_mean"])
    random_final = next((t for t in final if t["strategy"] == "random"), None)
    return {**best, "random_dice_mean": random_final["dice_mean"] if random_final else None}


def _pm(mean: float | None, sd: float | None) -> str:
    return "-" if mean is None else f"{mean:.4f} ± {sd or 0.0:.4f}"


def summary_markdown(summary: dict[str, Any], settings: SimulationSettings,
                     data: Dataset) -> str:
    full = summary["full_data"]
    n_all = len(data.pool) + len(data.test)
    lines = [
        "# Active-learning simulation",
        "",
        f"Pool {len(data.pool)} images, test {len(data.test)} ({settings.test_split}); "
        f"{settings.annotation} annotation"
        + (f" ({settings.sparse_fraction:.0%} of pixels)" if settings.annotation == "sparse"
           else "")
        + f"; seeds {', '.join(map(str, settings.seeds))}; rounds of "
        f"{settings.initial} + {settings.rounds} x {settings.per_round} images.",
        "",
        "## Final round (test Dice, mean ± sd over seeds)",
        "",
        "| strategy | images labeled | test Dice | share of full-data Dice |",
        "|---|---|---|---|",
        f"| {FULL_DATA} | {len(data.pool)} of {n_all} | {_pm(full['dice_mean'], full['dice_sd'])}"
        " | 100% |",
    ]
    final = [t for t in summary["table"] if t["round"] == settings.rounds]
    for t in final:
        share = "-" if t["share_of_full"] is None else f"{t['share_of_full']:.1%}"
        lines.append(f"| {t['strategy']} | {t['images']:.0f} of {n_all} | "
                     f"{_pm(t['dice_mean'], t['dice_sd'])} | {share} |")
    lines += ["", "## Every round (test Dice mean; share of full data)", ""]
    budgets = settings.budgets
    lines.append("| strategy | " + " | ".join(f"{b} images" for b in budgets) + " |")
    lines.append("|---|" + "---|" * len(budgets))
    for strategy in settings.strategies:
        cells = []
        for r in range(len(budgets)):
            t = next((t for t in summary["table"] if t["strategy"] == strategy
                      and t["round"] == r), None)
            if t is None or t["dice_mean"] is None:
                cells.append("-")
            else:
                share = "" if t["share_of_full"] is None else f" ({t['share_of_full']:.1%})"
                cells.append(f"{t['dice_mean']:.4f}{share}")
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    best = summary["best_final"]
    if best is not None:
        lines += ["", _best_line(best, n_all)]
    return "\n".join(lines) + "\n"


def _best_line(best: dict[str, Any], n_all: int) -> str:
    text = (f"Best at the final budget: **{best['strategy']}** with {best['images']:.0f} of "
            f"{n_all} images ({best['images'] / n_all:.0%}), Dice {best['dice_mean']:.4f}")
    if best["share_of_full"] is not None:
        text += f" = {best['share_of_full']:.1%} of the full-data Dice"
    if best["random_dice_mean"] is not None:
        diff = best["dice_mean"] - best["random_dice_mean"]
        text += f"; random at the same budget {best['random_dice_mean']:.4f} ({diff:+.4f})"
    return text + "."


def plot_curves(out: Path, rows: list[dict[str, Any]], settings: SimulationSettings) -> None:
    """Dice vs labeled images and vs labeled pixels: mean line, ±sd band, full-data line."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    data = curves(rows, settings.strategies)
    full_mean, full_sd, _ = _stats([r["test_dice"] for r in rows if r["strategy"] == FULL_DATA])
    for x_key, label, name in (("images", "labeled images", "dice_vs_images.png"),
                               ("pixels", "labeled pixels", "dice_vs_pixels.png")):
        fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
        for strategy, points in data.items():
            points = [p for p in points if p["dice_mean"] is not None]
            if not points:
                continue
            x = np.array([p[x_key] for p in points])
            y = np.array([p["dice_mean"] for p in points])
            sd = np.array([p["dice_sd"] for p in points])
            (line,) = ax.plot(x, y, marker="o", label=strategy)
            ax.fill_between(x, y - sd, y + sd, color=line.get_color(), alpha=0.15)
        if full_mean is not None:
            ax.axhline(full_mean, color="black", linestyle="--", label=FULL_DATA)
            ax.axhspan(full_mean - (full_sd or 0.0), full_mean + (full_sd or 0.0),
                       color="black", alpha=0.08)
        if x_key == "images":
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel(label)
        ax.set_ylabel("test Dice (mean ± sd over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        tmp = out / f".{name}.tmp.png"
        fig.savefig(tmp)
        plt.close(fig)
        os.replace(tmp, out / name)


def run_simulation(images: Sequence[Path], masks: Sequence[Path], settings: SimulationSettings,
                   out: Path, *, device: str | None = None, log: Log | None = None,
                   progress: Callable[[Any], Any] | None = None) -> list[dict[str, Any]]:
    """Load the data and run (or resume) the whole experiment; returns the result rows."""
    data = load_dataset(images, masks, settings, progress)
    return Simulation(data, settings, out, device=device, log=log).run()


__all__ = [
    "FULL_DATA", "Dataset", "Intake", "RunStore", "Simulation", "SimulationError",
    "SimulationSettings", "curves", "initial_strategy", "load_dataset", "parse_test_split",
    "run_simulation", "sequence_chunks", "settings_hash", "summarize", "write_reports",
]
