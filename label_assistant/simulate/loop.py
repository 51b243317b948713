"""The run loop: every (strategy, seed) oracle run, round by round, resumable from runs.jsonl."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from label_assistant.datasets import Example
from label_assistant.files import write_atomic as _write_atomic
from label_assistant.labelmap import labeled_pixel_counts
from label_assistant.model.registry import json_default
from label_assistant.simulate.data import Dataset, load_dataset
from label_assistant.simulate.oracle import (
    Intake,
    cleaned_example,
    foreground_dice,
    oracle_annotation,
    prelabel,
)
from label_assistant.simulate.reports import write_reports
from label_assistant.simulate.settings import (
    FULL_DATA,
    RUNS_FILE,
    SETTINGS_FILE,
    Log,
    SimulationError,
    SimulationSettings,
    settings_hash,
)

# ---------------------------------------------------------------- progress file


if TYPE_CHECKING:  # torch is imported where a model is trained
    from label_assistant.model.predictor import Predictor


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
        self._steps_done = 0
        self._step_seconds: list[float] = []
        self._otsu_test_dice: float | None = None
        self._otsu_cms: list[np.ndarray] | None = None
        self._confusions: dict[tuple[str, int, str], list[np.ndarray]] = {}

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
            for strategy in self.settings.strategies:
                self._run_strategy(strategy, seed)
                write_reports(self.out, self.rows(), self.settings, self.data,
                              self.otsu_test_dice)
            self._run_full_data(seed)  # the reference, last: the curves come first
        write_reports(self.out, self.rows(), self.settings, self.data, self.otsu_test_dice)
        return self.rows()

    @property
    def otsu_test_dice(self) -> float | None:
        """Otsu's foreground Dice on the test images: what a served model must not fall
        below (computed once)."""
        if self._otsu_test_dice is None:
            self._otsu_test_dice = self._scores(self._otsu_confusions(), 0.0)["test_dice"]
        return self._otsu_test_dice

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
                    model: Predictor | None) -> RunState:
        """Select the next images with this round's model, pre-label, annotate, gate."""
        from label_assistant.selectors import rank
        from label_assistant.selectors.pool import pool_from_images

        started = time.perf_counter()
        annotated = set(state.annotated)
        labeled = np.array([e.name in annotated for e in self.data.pool])
        # No model (nothing admitted yet): the model-free part chooses, as in round 0.
        name = strategy if model is not None else initial_strategy(strategy)
        callables = {} if model is None else {
            "predict": partial(model.predict, tta=self.settings.tta,
                               mc_samples=self.settings.mc_samples),
            "embed": model.embed}
        pool = pool_from_images(
            ((e.name, e.image) for e in self.data.pool), strategy=name,
            sequences=self.data.sequences, labeled=labeled, tta=self.settings.tta,
            mc_samples=self.settings.mc_samples, **callables)
        picks = rank(pool, name, self.settings.per_round, seed=seed * 1000 + r + 1)
        seconds = time.perf_counter() - started
        names = [item.name for item in picks]
        intake = self.intake(names, model, seed)
        intake.select_seconds = round(seconds, 3)
        return RunState(state.annotated + names, state.admitted + intake.admitted,
                        state.quarantined + intake.quarantined, intake)

    def intake(self, names: list[str], model: Predictor | None, seed: int, *,
               dense: bool = False, prelabels: bool = True) -> Intake:
        """Pre-label, oracle-annotate, and let the gate decide on ``names``, with the round's
        model probabilities: the service's gate (:func:`label_assistant.assist.gate.gate`)."""
        from label_assistant.assist.gate import gate

        admitted, quarantined, dice, warnings = [], [], [], 0
        for name in names:
            index = self.index[name]
            example = self.data.pool[index]
            probabilities = None
            if prelabels:
                pre, probabilities = prelabel(example, model, self.data.n_classes)
                dice.append(foreground_dice(example.label_map, pre, self.data.n_classes))
            label_map, instances = oracle_annotation(example, self.settings, seed, index, dense)
            decision = gate(label_map, class_names=self.data.class_names[1:],
                            instances=instances, probabilities=probabilities)
            warnings += sum(1 for f in decision.report["findings"]
                            if f["severity"] == "warning")
            (admitted if decision.admitted else quarantined).append(name)
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
        return cleaned_example(example, label_map, instances, self.data.class_names[1:])

    def _round(self, strategy: str, seed: int, r: int, state: RunState, *,
               select_next: bool) -> RunState | None:
        """Train on the admitted annotations, evaluate, select and take in the next images
        (``select_next``), append the row; returns the next round's state.

        A strategy's round is the service's round (:func:`label_assistant.model.round.
        train_round`): a candidate trained against what serves, promoted only if it beats
        it on the validation annotations; what serves then is evaluated on the test images,
        pre-labels the next images and scores the pool. The full-data baseline trains once,
        from scratch, and is evaluated as it is."""
        started = time.perf_counter()
        dense = strategy == FULL_DATA
        examples = [self._annotation(n, seed, dense) for n in state.admitted]
        if dense:
            serving, trained = self._train(examples, seed)
            test = self._evaluate(serving)
        else:
            serving, trained, test = self._challenge(strategy, seed, r, examples)
        row = self._row(strategy, seed, r, state, examples, trained, test)
        next_state = None
        if select_next:
            next_state = self._next_round(strategy, seed, r, state, serving)
            row["next"] = next_state.to_dict()
        # All of it: annotations, training, the challenge, test scores, the next intake.
        row["round_seconds"] = round(time.perf_counter() - started, 3)
        self.store.append(row)
        self._progress(row, row["round_seconds"])
        return next_state

    def _registry(self, strategy: str, seed: int) -> Any:
        """The run's model versions (``OUT/models/<strategy>/seed<k>``): what serves between
        rounds, so that an interrupted run resumes with the same champion."""
        from label_assistant.model.registry import ModelRegistry

        return ModelRegistry(self.out / "models" / strategy.replace("+", "_") / f"seed{seed}")

    def _otsu(self) -> Any:
        from label_assistant.assist.pre import OtsuParams, OtsuPrelabeler

        return OtsuPrelabeler(OtsuParams(n_classes=self.data.n_classes))

    def _challenge(self, strategy: str, seed: int, r: int, examples: list[Example]
                   ) -> tuple[Predictor | None, dict[str, Any], dict[str, Any]]:
        """A candidate against what served after round ``r - 1``; what serves now, the
        training facts and the test scores (of what serves, and of the candidate)."""
        from label_assistant.model.config import TrainingError
        from label_assistant.model.job import publish_round
        from label_assistant.model.predictor import serving as serving_of
        from label_assistant.model.registry import OTSU
        from label_assistant.model.round import train_round

        registry = self._registry(strategy, seed)
        before = self.store.done(strategy, seed)
        # On resume, what served after the previous round serves again (see _registry).
        previous = before[r - 1].get("serving_version") if 0 < r <= len(before) else None
        back_to = OTSU if r == 0 or not previous or previous.startswith("otsu") else previous
        if registry.serving() != back_to:
            registry.set_current(back_to, event="resume")
        otsu = self._otsu()
        champion = serving_of(registry, self.data.class_names, otsu=otsu, device=self.device)
        trained: dict[str, Any] = {}
        candidate_test: dict[str, Any] = {}
        if not examples:
            trained = {"error": "no admitted annotation"}
        else:
            config = self.settings.train_config(seed, self.device)
            try:
                round_ = train_round(examples, self.data.class_names, config, champion)
            except TrainingError as error:
                trained = {"error": str(error)}
            else:
                info = publish_round(registry, round_, self.data.class_names)
                verdict = round_.verdict
                result = round_.result
                trained = {"train_seconds": round(result.seconds, 3),
                           "epochs_run": result.metrics["epochs_run"],
                           "best_epoch": result.metrics["best_epoch"],
                           "init": result.metrics["init"], "candidate": info.id,
                           "promoted": verdict.promoted, "verdict": verdict.reason,
                           "candidate_val_dice_all": _mean(verdict.candidate_scores),
                           "champion_val_dice_all": _mean(verdict.champion_scores)}
                # The model itself, also on images it would leave to Otsu: what the
                # selected images taught it.
                started = time.perf_counter()
                raw = self._model_confusions((strategy, seed, info.id), round_.candidate)
                candidate_test = self._scores(raw, time.perf_counter() - started)
        serving = serving_of(registry, self.data.class_names, otsu=otsu, device=self.device)
        test = self._serving_scores(serving, (strategy, seed, serving.version))
        test.update(eval_seconds=test["eval_seconds"] + candidate_test.get("eval_seconds", 0.0),
                    serving_version=serving.version,
                    candidate_test_dice=candidate_test.get("test_dice"),
                    candidate_test_dice_all=candidate_test.get("test_dice_all"),
                    candidate_test_image_dice=candidate_test.get("test_image_dice"),
                    candidate_test_image_confusions=candidate_test.get(
                        "test_image_confusions"))
        if r == self.settings.rounds:  # the run is over: candidates that never served go
            served = {row.get("serving_version") for row in before} | {serving.version}
            for info in registry.list():
                if info.id not in served:
                    registry.delete(info.id)
        return (serving if hasattr(serving, "model") else None), trained, test

    def _train(self, examples: list[Example], seed: int
               ) -> tuple[Predictor | None, dict[str, Any]]:
        """Train from scratch on the examples (the full-data baseline); the model comes back
        as a version would be run."""
        from label_assistant.model.config import TrainingError
        from label_assistant.model.factory import ModelSpec, create_model
        from label_assistant.model.predictor import Predictor, Tiling
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
        predictor = Predictor(model.eval(), version="simulated", class_names=self.data.class_names,
                              tiling=Tiling.of_config(result.config), device=self.device)
        return predictor, {"train_seconds": round(result.seconds, 3),
                           "epochs_run": result.metrics["epochs_run"],
                           "best_epoch": result.metrics["best_epoch"]}

    def _model_confusions(self, key: tuple[str, int, str], model: Any) -> list[np.ndarray]:
        """A model's own per-test-image confusions (no fallback), once per version (``key``:
        strategy, seed, version): a round's test images run through one model only once."""
        from label_assistant.model.train import image_confusions

        if key not in self._confusions:
            self._confusions[key] = image_confusions(model, self.data.test,
                                                     self.data.n_classes, fallback=False)
        return self._confusions[key]

    def _otsu_confusions(self) -> list[np.ndarray]:
        from label_assistant.model.train import image_confusions

        if self._otsu_cms is None:
            self._otsu_cms = image_confusions(self._otsu(), self.data.test, self.data.n_classes)
        return self._otsu_cms

    def _serving_scores(self, serving: Any, key: tuple[str, int, str]) -> dict[str, Any]:
        """Test scores of what serves, as it serves: Otsu, or the model's own answer on the
        images it knows and Otsu's on the others (what ``Predictor.label_map`` does), from
        the cached confusions."""
        started = time.perf_counter()
        otsu = self._otsu_confusions()
        if not hasattr(serving, "model"):
            return self._scores(otsu, time.perf_counter() - started)
        raw = self._model_confusions(key, serving)
        served = [own if serving.familiar(e.image) else fallback
                  for own, fallback, e in zip(raw, otsu, self.data.test, strict=True)]
        return self._scores(served, time.perf_counter() - started)

    def _evaluate(self, model: Any | None) -> dict[str, Any]:
        """Test scores of a model as it is (the full-data baseline) or of Otsu."""
        from label_assistant.model.train import image_confusions

        if model is None:
            return self._scores(None, 0.0)
        started = time.perf_counter()
        confusions = image_confusions(model, self.data.test, self.data.n_classes)
        return self._scores(confusions, time.perf_counter() - started)

    def _scores(self, confusions: list[np.ndarray] | None, seconds: float) -> dict[str, Any]:
        """Foreground Dice (the reference paper's number), mean Dice over all classes, IoU,
        each test image's Dice and confusion matrix (the reports' bootstrap of the pooled
        Dice resamples them)."""
        from label_assistant.model.train import scores_of_confusions

        if confusions is None:
            return {"test_dice": None, "test_dice_all": None, "test_iou": None,
                    "test_dice_per_class": None, "test_image_dice": None,
                    "test_image_confusions": None}
        metrics = scores_of_confusions(confusions)
        fg_iou = [v for v in metrics["iou"][1:] if v is not None]
        return {"test_dice": metrics["mean_dice"], "test_dice_all": metrics["mean_dice_all"],
                "test_iou": float(np.mean(fg_iou)) if fg_iou else None,
                "test_dice_per_class": metrics["dice"][1:],
                "test_image_dice": metrics["image_dice"],
                "test_image_confusions": [np.asarray(c, dtype=np.int64).tolist()
                                          for c in confusions],
                "eval_seconds": round(seconds, 3)}

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
            **{k: trained.get(k) for k in ("init", "candidate", "promoted", "verdict",
                                           "candidate_val_dice_all", "champion_val_dice_all")},
            "prelabel_source": state.intake.prelabel_source,
            "prelabel_dice": state.intake.prelabel_dice,
            "inspection_warnings": state.intake.warnings,
            "new_images": state.intake.names, "quarantined_images": state.quarantined,
            "error": trained.get("error"),
            "settings_hash": self.store.hash,
            "finished_at": round(time.time(), 1),  # unix time: how long the strategies took
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


def _mean(scores: Any) -> float | None:
    return None if scores is None else scores.mean_dice


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"



def run_simulation(images: Sequence[Path], masks: Sequence[Path], settings: SimulationSettings,
                   out: Path, *, device: str | None = None, log: Log | None = None,
                   progress: Callable[[Any], Any] | None = None) -> list[dict[str, Any]]:
    """Load the data and run (or resume) the whole experiment; returns the result rows."""
    data = load_dataset(images, masks, settings, progress)
    return Simulation(data, settings, out, device=device, log=log).run()

