"""Training on several processes: PyTorch's DistributedDataParallel (DDP), started by ``torchrun``.

``torchrun --nproc-per-node 2 -m cvlab train ...`` (or ``python -m torch.distributed.run``) starts one process
per GPU or per share of the CPU and tells each who it is in environment variables: ``RANK`` (0 ..
WORLD_SIZE - 1, over every machine), ``WORLD_SIZE`` (how many processes), ``LOCAL_RANK`` (its number on this
machine, which picks its GPU) and ``MASTER_ADDR`` / ``MASTER_PORT`` (where rank 0 listens). This module turns
them into a process group (``torch.distributed.init_process_group``: backend gloo on CPU, nccl on CUDA, with a
timeout, so that a rank that fails or hangs ends the run instead of blocking the others for ever), wraps the
model in ``DistributedDataParallel`` (after every backward pass the gradients are averaged over the ranks, so
every rank takes the same step and keeps the same weights), splits the data (``DistributedSampler``: each rank
its own share, reshuffled per epoch with ``set_epoch``) and reduces metrics (sums over the ranks, so that
every rank, and the history rank 0 writes, hold the same numbers). Rank 0 is the main process: it alone
writes files and prints.

Without torchrun (no RANK, WORLD_SIZE, LOCAL_RANK), or with one process, every function here is the
one-process case: rank 0 of 1, nothing wrapped, sums returned as they are. So code written with it runs
unchanged on one process.

Sources: PyTorch's DDP notes and API (https://pytorch.org/docs/stable/notes/ddp.html,
https://pytorch.org/docs/stable/generated/torch.nn.parallel.DistributedDataParallel.html), torchrun
(https://pytorch.org/docs/stable/elastic/run.html), and torchvision's ``references/classification/utils.py``
(``init_distributed_mode``, ``reduce_across_processes``).
"""
from __future__ import annotations

import datetime
import os
from typing import Any, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import nn

from .utils import DEFAULT_SEED, get_device

__all__ = ["DEFAULT_TIMEOUT", "ENV_VARS", "add_distributed_options", "broadcast_object", "cleanup",
           "eval_indices", "init_distributed", "is_distributed", "is_main_process", "rank", "reduce_sums",
           "sync_buffers", "torchrun_env", "train_sampler", "unwrap", "world_size", "wrap_model"]

#: the variables torchrun sets for every process it starts
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")

#: seconds a process waits for the others in one collective operation before the run stops
DEFAULT_TIMEOUT = 300.0


def torchrun_env(environ: Mapping[str, str] | None = None) -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` read from torchrun's variables, or None when none is set.

    Args:
        environ: the environment to read (default ``os.environ``).

    Raises:
        ValueError: some of RANK, WORLD_SIZE, LOCAL_RANK set but not all, a value that is not a whole number,
            or a rank outside 0 .. WORLD_SIZE - 1; the message says how to start the run instead.
    """
    env = os.environ if environ is None else environ
    present = [k for k in ENV_VARS if k in env]
    if not present:
        return None
    if len(present) < len(ENV_VARS):
        missing = [k for k in ENV_VARS if k not in env]
        raise ValueError(f"{', '.join(present)} set but not {', '.join(missing)}: start the run with torchrun "
                         "(it sets all three), or unset them to train on one process")
    try:
        rank_, world, local = (int(env[k]) for k in ENV_VARS)
    except ValueError:
        raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers, got "
                         f"{', '.join(f'{k}={env[k]!r}' for k in ENV_VARS)}: start the run with torchrun") from None
    if world < 1 or not 0 <= rank_ < world or not 0 <= local < world:
        raise ValueError(f"RANK={rank_}, LOCAL_RANK={local} do not fit WORLD_SIZE={world} (ranks are 0 .. "
                         "WORLD_SIZE - 1): start the run with torchrun")
    return rank_, world, local


def is_distributed() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank, 0 .. world_size() - 1 (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """How many processes train together (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Whether this is rank 0, the process that writes files and prints (True without a process group)."""
    return rank() == 0


def _device_for(device: str | None, local_rank: int, world: int) -> torch.device:
    """The device of the process with ``local_rank`` on its machine: its own GPU (cuda:LOCAL_RANK), or the CPU."""
    chosen = get_device(device)
    if chosen.type == "cuda":
        if device is not None and chosen.index is not None and world > 1:
            raise ValueError(f"--device {device} names one GPU, but each process of a torchrun run takes its own "
                             "(cuda:LOCAL_RANK): pass --device cuda, or leave --device out")
        per_machine = max(local_rank + 1, int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0))  # torchrun sets it
        if per_machine > torch.cuda.device_count():
            raise ValueError(f"{per_machine} processes on this machine need a GPU each, and it has "
                             f"{torch.cuda.device_count()}: start at most that many per machine (--nproc-per-node), "
                             "or pass --device cpu")
        return torch.device("cuda", local_rank)
    if chosen.type == "mps":
        raise ValueError("PyTorch has no backend to train on several processes with Apple MPS: pass --device cpu, "
                         "or train on one process without torchrun")
    return chosen


def init_distributed(device: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> torch.device:
    """Join the process group torchrun prepared, and return the device this process trains on.

    Under torchrun with WORLD_SIZE > 1: ``torch.distributed.init_process_group`` with backend "nccl" when the
    device is CUDA (each process takes cuda:LOCAL_RANK, ``torch.cuda.set_device``) and "gloo" on the CPU,
    rendezvous at MASTER_ADDR:MASTER_PORT (``env://``). Otherwise (one process) nothing is initialised and
    the device is ``cvlab.utils.get_device(device)``. Calling it again returns the same device.

    Args:
        device: "cpu", "cuda" or None (the best available: CUDA, then MPS, then CPU; ``CVLAB_DEVICE`` overrides).
        timeout: seconds a collective operation (the rendezvous too) may wait for the other processes before it
            raises; a rank that fails or hangs then ends the run instead of blocking it for ever.

    Returns:
        the ``torch.device`` for this process's model and batches.

    Raises:
        ValueError: a partial torchrun environment (``torchrun_env``), a device that cannot be used on several
            processes (a numbered GPU, more processes than GPUs, Apple MPS), or a timeout <= 0.
        RuntimeError / DistBackendError: the rendezvous failed or timed out (PyTorch's message).
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    env = torchrun_env()
    if env is None or env[1] == 1:
        return get_device(device)
    _, world, local = env
    chosen = _device_for(device, local, world)
    if not dist.is_initialized():
        if chosen.type == "cuda":
            torch.cuda.set_device(chosen)
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout))
    return chosen


def cleanup() -> None:
    """Leave the process group (``destroy_process_group``), if this process is in one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    """Where tensors for collectives live: the current GPU for nccl, the CPU for gloo."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def reduce_sums(values: Sequence[float]) -> list[float]:
    """Sum numbers over every rank (``all_reduce`` with SUM, in float64); every rank gets the same sums.

    Reduce sums and counts (e.g. summed loss, correct predictions, samples seen), then divide: the
    mean over every sample, however the samples were split.

    Args:
        values: this rank's numbers.

    Returns:
        the sums over the ranks, as floats; on one process ``values`` as they are (a list).
    """
    if not is_distributed():
        return list(values)
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (any picklable value) on every rank; on one process ``obj`` itself."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def wrap_model(model: nn.Module, device: torch.device | str | None = None, *,
               find_unused_parameters: bool = False) -> nn.Module:
    """``DistributedDataParallel(model)`` when training on several processes; else the model itself.

    Move the model to its device and memory format first (DDP needs them final). Wrapping broadcasts rank 0's
    weights and buffers, so every rank starts from the same model.

    Args:
        model: the model, moved to ``device``.
        device: this process's device (``init_distributed``'s); None picks as ``cvlab.utils.get_device``.
        find_unused_parameters: let parameters without a gradient in some steps (a backbone frozen with
            ``requires_grad_(False)`` after wrapping, then unfrozen) be skipped instead of waited for; costs a
            walk over the autograd graph per step, and PyTorch warns once when every parameter is used.

    Returns:
        the wrapped model (its ``.module`` is ``model``) or ``model``.
    """
    device = torch.device(device) if device is not None else get_device()
    model.to(device)
    if not is_distributed():
        return model
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper (what to save, load and evaluate), else the model."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def sync_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics), in place.

    DDP broadcasts buffers at the start of each forward pass, so after the last training step of an
    epoch each rank holds statistics updated with its own batch: call this before evaluating, so that every
    rank evaluates the model rank 0 saves. Does nothing on one process.
    """
    if not is_distributed():
        return
    for buffer in unwrap(model).buffers():
        dist.broadcast(buffer, src=0)


def train_sampler(num_samples: int, *, seed: int = DEFAULT_SEED,
                  shuffle: bool = True) -> torch.utils.data.DistributedSampler:
    """This rank's share of ``num_samples`` training samples: a ``DistributedSampler``.

    Each rank draws ceil(num_samples / world_size) indices (a few repeated so the shares are equal: DDP needs
    every rank to take the same number of steps), in an order that all ranks agree on and that changes with
    ``sampler.set_epoch(epoch)`` (``cvlab.training.fit`` calls it before every epoch).

    Args:
        num_samples: the training set's size.
        seed: the shuffling seed (the same on every rank).
        shuffle: a new order every epoch (False: in order).

    Returns:
        the sampler, for ``DataLoader(sampler=...)`` or ``cvlab.loaders.InMemoryLoader(sampler=...)``.
    """
    return torch.utils.data.DistributedSampler(range(num_samples), num_replicas=world_size(), rank=rank(),
                                               shuffle=shuffle, seed=seed, drop_last=False)


def eval_indices(num_samples: int) -> range:
    """This rank's share of ``num_samples`` evaluation samples: every world_size()-th from its rank, none
    repeated (so sums reduced over the ranks count each sample once); ``range(num_samples)`` on one process."""
    return range(rank(), num_samples, world_size())


def _timeout(text: str) -> float:
    """argparse type of --dist-timeout: seconds, 1 .. 86400."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (seconds, e.g. 300)") from None
    if not 1 <= value <= 86_400:
        raise argparse.ArgumentTypeError(f"must be >= 1 and <= 86400 seconds, got {text}")
    return value


def add_distributed_options(group) -> None:
    """``cvlab train``'s option for runs on several processes (``cvlab.cli.build_parser`` adds it)."""
    group.add_argument("--dist-timeout", type=_timeout, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                       help="under torchrun: seconds a process waits for the others; a rank that fails or hangs "
                            "ends the whole run after at most this long")
