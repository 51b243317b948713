"""Multi-process training (DistributedDataParallel), launched by torchrun.

A training job whose config says ``nproc`` > 1 (``label-assistant train --nproc N``, or
``"nproc": N`` in the backend's ``LA_TRAIN_CONFIG``) runs on N processes of this machine:
:func:`launch` starts them with ``torch.distributed.run`` (torchrun; rendezvous on the c10d
store of 127.0.0.1, on a port the OS picks, no restarts) and each runs one rank
(:func:`label_assistant.model.job.rank`) on the same job folder:

- the backend is **nccl** with one GPU per process when CUDA has at least N GPUs, else
  **gloo** (CPU unless the config names a device);
- rank 0 runs the job as one process would: it loads the data and the champion, trains,
  validates every epoch, keeps the best epoch, challenges the champion, publishes through the
  registry and writes ``status.json``; the other ranks train and nothing else (they never
  write to the registry or the status);
- every rank draws the same seeded tile batches of ``batch_size`` tiles and trains on its
  own part of each (:meth:`label_assistant.model.tiles.TileBatch.shard`, the split
  ``DistributedSampler`` makes), so the effective batch is the single process's;
  DistributedDataParallel averages the gradients. On GPUs, BatchNorm is synchronised across
  ranks (``SyncBatchNorm``); gloo on CPU keeps per-rank BatchNorm statistics;
- rank 0 broadcasts each epoch's log entry (its validation scores) and whether to stop, so
  every rank keeps the same best epoch and stops after the same epoch (early stopping never
  leaves a rank waiting);
- a rank that fails makes torchrun stop the others; :func:`launch` raises
  :class:`DistributedError` with that rank's reason (from the error file torchrun's
  ``@record`` writes), never waiting forever.

Inside one process (``nproc`` 1, or before the process group exists) every helper here is a
no-op: :func:`place` says rank 0 of 1.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from label_assistant.model.config import TrainConfig, TrainingError

log = logging.getLogger(__name__)

#: The signals torchrun's agent handles while it runs (SIGTERM or Ctrl-C stops every rank).
_AGENT_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
#: Seconds between torchrun's checks of its processes (how soon a crash stops the others).
MONITOR_INTERVAL = 1.0


class DistributedError(RuntimeError):
    """A multi-process run failed: the reason of the rank that failed first."""


@dataclass(frozen=True)
class Place:
    """This process's place in a distributed run (rank 0 of 1 outside one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that validates, decides and publishes."""
        return self.rank == 0


def place() -> Place:
    """Where this process stands: from the initialised process group, else rank 0 of 1."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return Place()
    return Place(dist.get_rank(), dist.get_world_size(),
                 int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def check_split(config: TrainConfig) -> None:
    """A one-line :class:`TrainingError` when ``config.nproc`` can't train ``batch_size``."""
    if config.nproc < 1:
        raise TrainingError(f"nproc must be 1 or more, got {config.nproc}")
    if config.batch_size % config.nproc:
        raise TrainingError(
            f"batch size {config.batch_size} does not split over {config.nproc} processes "
            f"(each trains on batch_size // nproc tiles): choose a batch size divisible by "
            f"{config.nproc}")


def backend_for(nproc: int, device: str | None = None) -> str:
    """``nccl`` when CUDA has at least ``nproc`` GPUs (and no other device is asked for),
    else ``gloo``."""
    import torch

    wants_cuda = device is None or str(device).startswith("cuda")
    if wants_cuda and torch.cuda.is_available() and torch.cuda.device_count() >= nproc:
        return "nccl"
    return "gloo"


def train_device(requested: str | None) -> Any:
    """The torch device a training process uses: its own GPU under nccl; CPU under gloo
    unless ``requested`` names one; outside a distributed run ``requested``, else CUDA when
    present."""
    import torch
    import torch.distributed as dist

    from label_assistant.model.inference import default_device

    if place().world > 1:
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device(requested or "cpu")
    return torch.device(requested) if requested else default_device()


def wrap(model: Any, device: Any) -> Any:
    """``model`` for training in a distributed run (DistributedDataParallel; SyncBatchNorm on
    GPUs); the model itself in one process. Its weights stay those of ``model``."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    if place().world == 1:
        return model
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index])
    return DistributedDataParallel(model)


def unwrapped(model: Any) -> Any:
    """The plain model inside a :func:`wrap`-ped one (whose weights a version saves)."""
    return getattr(model, "module", model)


def mean_over_ranks(value: float, device: Any) -> float:
    """``value`` averaged over the ranks (itself in one process)."""
    import torch
    import torch.distributed as dist

    if place().world == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / place().world


def from_main(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a picklable object; ``value`` in one process)."""
    import torch.distributed as dist

    if place().world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# --- launching ------------------------------------------------------------------------------


#: What torchrun starts on each process (named, not imported: the job imports this module).
RANK_MODULE = "label_assistant.model.job"


def torchrun_args(job_dir: Path, nproc: int) -> list[str]:
    """The ``torch.distributed.run`` arguments that run one rank of the job in ``job_dir``
    on each process (:func:`label_assistant.model.job.rank_main`)."""
    return ["--nnodes", "1", "--nproc-per-node", str(nproc),
            "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0",
            "--rdzv-id", uuid.uuid4().hex, "--local-addr", "127.0.0.1",
            "--max-restarts", "0", "--monitor-interval", str(MONITOR_INTERVAL),
            "-m", RANK_MODULE, str(job_dir)]


def launch(job_dir: Path, nproc: int) -> None:
    """Run the training job in ``job_dir`` on ``nproc`` processes (torchrun) and wait;
    :class:`DistributedError` with the first failing rank's reason when one fails."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    log.info("training on %d processes (torchrun, %s)", nproc, backend_for(nproc))
    # torchrun's agent turns these signals into an exception that stops the ranks, while it
    # runs; afterwards this process handles them as before.
    saved = {sig: signal.getsignal(sig) for sig in _AGENT_SIGNALS}
    try:
        torchrun(torchrun_args(Path(job_dir), nproc))
    except ChildFailedError as error:
        raise DistributedError(failure_reason(error.failures)) from None
    finally:
        if threading.current_thread() is threading.main_thread():
            for sig, handler in saved.items():
                signal.signal(sig, handler)


#: Words of the errors a rank raises because another one died first (gloo's connection loss).
_PEER_LOST = ("connection closed by peer", "connection reset by peer", "remote worker")


def failure_reason(failures: dict[int, Any]) -> str:
    """One line: the rank that failed first and why. Ranks that torchrun stopped (SIGTERM)
    and ranks that only lost a peer come after the rank that failed by itself."""
    def message(failure: Any) -> str:
        data = failure.message
        text = data.get("message", "") if isinstance(data, dict) else str(data or "")
        return str(text).strip().splitlines()[0] if str(text).strip() else ""

    def order(item: tuple[int, Any]) -> tuple[bool, bool, int, int]:
        rank, failure = item
        lost = any(words in message(failure).lower() for words in _PEER_LOST)
        return (failure.exitcode == -signal.SIGTERM, lost, failure.timestamp, rank)

    if not failures:
        return "a training process failed"
    rank, failure = min(failures.items(), key=order)
    text = message(failure)
    if not text or text.startswith("To enable traceback"):
        text = (f"killed by signal {-failure.exitcode}" if failure.exitcode < 0
                else f"exit code {failure.exitcode}")
    return f"rank {rank}: {text}"[:500]
