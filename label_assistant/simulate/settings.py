"""The experiment's settings, checked on construction, and their hash (resume guard)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

FULL_DATA = "full-data"
#: How the oracle annotates: ``dense`` (the whole truth), ``sparse`` (whole objects and a
#: band of context, ``sparse_fraction`` of the pixels), ``ring`` (whole objects with a thin
#: Background ring, the careful partial annotator) and ``border`` (the Otsu pre-label's
#: objects accepted as they are, Background painted only in bands along the image borders:
#: the trial that made a model paint the whole interior).
ANNOTATIONS = ("dense", "sparse", "ring", "border")
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
    groups: str | None = None  # CSV file: name,group (each image's experiment or sequence)
    sequence_clusters: str | None = None  # "auto" or a count: k-means groups of descriptors
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
        given = [flag for flag, value in (
            ("--sequence-regex", self.sequence_regex), ("--sequence-chunks", self.sequence_chunks),
            ("--groups", self.groups), ("--sequence-clusters", self.sequence_clusters))
            if value is not None]
        if len(given) > 1:
            raise SimulationError(f"use one of {', '.join(given)}, not several")
        clusters = self.sequence_clusters
        if clusters is not None and clusters != "auto" and not (
                str(clusters).isdigit() and int(clusters) >= 1):
            raise SimulationError(f"--sequence-clusters must be auto or a count >= 1, got "
                                  f"{clusters!r}")
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

