"""The bottom floor every lesson needs: seeding, device choice, CPU features, file hashes, progress
bars and the lesson's result line. Nothing here imports another cvlab module.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = ["AMP_DTYPES", "AVX2_ENV", "DEFAULT_SEED", "MAX_BAR_REFRESHES", "autocast_dtype", "avx2_env", "cpu_has_bf16", "cpu_info", "get_device",
           "key_result", "model_mode", "progress_bar", "rerun_with_avx2_kernels", "set_seed", "sha256_file",
           "chmod_as_user_file", "write_atomically"]

#: the one seed default of the package: every ``seed=`` argument defaults to it
DEFAULT_SEED = 0



def set_seed(seed: int = DEFAULT_SEED) -> None:
    """Seed Python's ``random``, NumPy and PyTorch (CPU and every CUDA device).

    Args:
        seed: any integer in [0, 2**32 - 1].

    Raises:
        ValueError: if ``seed`` is negative or not an integer.

    With the same seed, the same code on the same device and library versions gives the same
    numbers. Data loaders that shuffle keep their own generator (see ``cvlab.loaders``). This is the
    only function in cvlab that changes the global random state.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32 - 1], got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed))
    torch.manual_seed(int(seed))  # also seeds every CUDA device



def get_device(prefer: str | None = None) -> torch.device:
    """The best available device: CUDA, then Apple MPS, then CPU.

    Args:
        prefer: force a device ("cpu", "cuda", "cuda:1", "mps"); None picks automatically.
            The environment variable ``CVLAB_DEVICE`` overrides the automatic choice.

    Returns:
        a ``torch.device``.

    Raises:
        ValueError: if the device asked for is not available on this machine.
    """
    prefer = prefer or os.environ.get("CVLAB_DEVICE") or None
    if prefer is not None:
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {prefer!r} asked for, but CUDA is not available here; "
                             "use 'cpu' or leave the device unset to pick automatically")
        if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"device {prefer!r} asked for, but Apple MPS is not available here; "
                             "use 'cpu' or leave the device unset to pick automatically")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")



#: environment variables that restrict PyTorch to AVX2 kernels, as on a laptop CPU without
#: AVX-512: ATen's vectorised kernels (``ATEN_CPU_CAPABILITY``) and oneDNN's convolutions and
#: matrix products (``ONEDNN_MAX_CPU_ISA``; no AVX-512, no AMX, so no fast bfloat16). They act
#: only when set before ``import torch``: ``python course.py --avx2 ...`` and the benchmarks'
#: ``--avx2`` set them (with ``avx2_env``) for the processes they start.
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def avx2_env() -> dict[str, str]:
    """``AVX2_ENV`` plus a ``torch.compile`` cache of its own (``TORCHINDUCTOR_CACHE_DIR``).

    Measured with torch 2.14: a kernel that ``torch.compile`` cached in a normal run and reused
    under ``ATEN_CPU_CAPABILITY=avx2`` returns garbage (logits of 1e31 instead of 0.1), so the
    AVX2 mode compiles into ``<temp folder>/torchinductor_<user>_avx2``.
    """
    import getpass
    import tempfile

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name (some containers)
        user = "user"
    return {**AVX2_ENV, "TORCHINDUCTOR_CACHE_DIR": os.path.join(tempfile.gettempdir(), f"torchinductor_{user}_avx2")}


def rerun_with_avx2_kernels() -> None:
    """Run this script again (same Python, same arguments) with ``avx2_env()`` set, unless it is set
    already: a benchmark's ``--avx2`` switch. The variables act only before ``import torch``, so the
    process is replaced (``os.execve``) and this call does not return in the first run.
    """
    import sys

    env = avx2_env()
    if all(os.environ.get(k) == v for k, v in env.items()):
        return
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **env})


def cpu_has_bf16() -> bool:
    """True when the CPU has bfloat16 instructions (AVX-512 BF16 or AMX), read from /proc/cpuinfo,
    and PyTorch may use them (not in the AVX2 mode of ``AVX2_ENV``).

    Only there does ``torch.autocast("cpu", dtype=torch.bfloat16)`` speed training up; elsewhere the
    conversions make it slower. Returns False where /proc/cpuinfo does not exist (Windows, macOS).
    """
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() == AVX2_ENV["ONEDNN_MAX_CPU_ISA"]:
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags



@contextlib.contextmanager
def model_mode(model: torch.nn.Module, training: bool):
    """Put ``model`` in train (True) or eval (False) mode for a ``with`` block, then back in the mode
    it was in, also when the block raises: the contract that every cvlab function leaves a model's
    mode as it found it. Yields the model."""
    was_training = model.training
    model.train(training)
    try:
        yield model
    finally:
        model.train(was_training)


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes as 64 hex digits, read 1 MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()



def key_result(text: str) -> None:
    """Print a lesson's key result as one line starting with "Key result:".

    The headless course run (``python course.py --headless``) collects these lines and prints
    them beside each notebook's run time.
    """
    print(f"Key result: {text}")


#: a progress bar redraws at most this many times (plus once per description or postfix change)
MAX_BAR_REFRESHES = 100


def progress_bar(iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 enabled: bool = True, leave: bool = False, unit: str = "batch", **tqdm_kwargs: Any) -> tqdm:
    """A tqdm bar (``tqdm.auto``: a widget in Jupyter, text elsewhere) that redraws a bounded number of times.

    In a notebook every redraw is a message from the kernel to its client. A bar that redraws ten
    times a second (tqdm's default) sends thousands of them during a long cell; a client that reads
    them only when the cell ends (nbval does) then loses some to ZeroMQ's 1,000-message queue
    limit, the kernel's "idle" message among them, and the cell fails with "Timeout of 5 seconds
    exceeded waiting for output". This bar redraws at most ``MAX_BAR_REFRESHES`` times (every
    ``total / MAX_BAR_REFRESHES`` steps) and at most twice a second.

    Args:
        iterable: what to iterate over (as ``tqdm(iterable)``), or None to call ``update`` by hand.
        total: the number of steps; None takes ``len(iterable)`` when it has one.
        desc: the label in front of the bar.
        enabled: False gives a silent bar (``disable=True``) that still counts.
        leave: keep the finished bar on screen.
        unit: what one step is called.
        **tqdm_kwargs: any other ``tqdm`` argument; ``mininterval`` (seconds, default 0.5) and
            ``miniters`` (steps) override the bounds.

    Returns:
        the ``tqdm`` object (a context manager; ``with progress_bar(...) as bar:``).
    """
    if total is None and iterable is not None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    tqdm_kwargs.setdefault("mininterval", 0.5)
    if total:
        tqdm_kwargs.setdefault("miniters", max(1, math.ceil(total / MAX_BAR_REFRESHES)))
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, leave=leave, **tqdm_kwargs)


def cpu_info() -> str:
    """The CPU model and the instruction set PyTorch's kernels use, for printing beside a timing.

    Returns:
        e.g. "Intel(R) Xeon(R) Processor, 2 threads, ATen AVX512" — the model name from
        /proc/cpuinfo (``platform.processor()`` elsewhere), torch's thread count and
        ``torch.backends.cpu.get_cpu_capability()`` (which ``ATEN_CPU_CAPABILITY=avx2`` lowers),
        and ", oneDNN max AVX2" when ``ONEDNN_MAX_CPU_ISA`` caps oneDNN (see ``AVX2_ENV``).
    """
    import platform

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")()
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return f"{model}, {torch.get_num_threads()} threads, ATen {capability}" + (f", oneDNN max {isa}" if isa else "")


#: names ``fit`` and the CLI accept for mixed precision
AMP_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def autocast_dtype(amp_dtype: "torch.dtype | str | None", device: "torch.device | str | None" = None) -> "torch.dtype | None":
    """The dtype for ``torch.autocast`` from a dtype or its name ("bfloat16"/"bf16", "float16"/"fp16"), or None.

    Args:
        amp_dtype: a dtype, one of ``AMP_DTYPES``' names, or None (full float32).
        device: where it will run; None picks CUDA, then MPS, then CPU.

    Raises:
        ValueError: an unknown name, or float16 on a CPU (use bfloat16 there).
    """
    device = get_device(device)
    if isinstance(amp_dtype, str):
        if amp_dtype not in AMP_DTYPES:
            raise ValueError(f"amp_dtype must be one of {sorted(AMP_DTYPES)} or None, got {amp_dtype!r}")
        amp_dtype = AMP_DTYPES[amp_dtype]
    if amp_dtype == torch.float16 and device.type == "cpu":
        raise ValueError("float16 autocast is for CUDA; on a CPU use amp_dtype='bfloat16' (or None)")
    return amp_dtype


def chmod_as_user_file(fd: int) -> None:
    """Give a mkstemp file (0600) the permissions any new file of the user gets (0666 minus umask)."""
    if not hasattr(os, "fchmod"):  # Windows: permissions are not POSIX modes
        return
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)


def write_atomically(path: str | os.PathLike, write: Callable[[str], Any], *, overwrite: bool = False) -> Path:
    """Call ``write(temporary_path)``, then move that file to ``path`` with ``os.replace`` (atomic).

    An exporter that fails or is interrupted leaves no half-written file: the temporary file (in
    ``path``'s folder, named ``.<stem>.*.tmp<suffix>``) is removed. Parent folders are made.

    Returns:
        ``path``.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        whatever ``write`` raises.
    """
    path = Path(path)
    if path.exists() and (not overwrite or path.is_dir()):
        raise FileExistsError(f"{path} exists: pass overwrite=True to replace it, or choose another path"
                              if not path.is_dir() else f"{path} is a folder: give a file name, e.g. {path / 'model.onnx'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    chmod_as_user_file(fd)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
