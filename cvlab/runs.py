"""Run folders: where a training run from the command line writes, never over another run.

Every run gets a fresh ``<data root>/runs/<model>-<dataset>-<YYYYmmdd-HHMMSS>`` folder unless told
otherwise; ``cvlab.cli`` refuses an ``--output-dir`` that already holds a run.
"""
from __future__ import annotations

import datetime
import os
from pathlib import Path

__all__ = ["RUN_FILES", "dataset_name", "folder_problem", "new_run_dir", "same_folder"]

#: the files a run writes; an --output-dir holding one of them holds a run
RUN_FILES = ("best.pt", "last.pt", "history.json")


def folder_problem(path: Path) -> str | None:
    """Why ``path`` cannot be (made and) written as a folder, or None."""
    if path.exists() and not path.is_dir():
        return f"{path} is a file, not a folder: pick a folder name (it is made if missing)"
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, so {path} cannot be made in it: pick a folder elsewhere"
    if not os.access(existing, os.W_OK | os.X_OK):
        return (f"cannot write in {existing} (no write permission): pick a folder you can write to, "
                f"e.g. under {Path.home()}")
    return None


def same_folder(a: Path, b: Path) -> bool:
    """Whether two paths name the same folder once resolved (False when one cannot be resolved)."""
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def dataset_name(data_dir: Path | None) -> str:
    """A run folder's dataset part: "fashion-mnist" without a data folder, else the folder's name
    with characters other than letters, digits, ".", "_" and "-" replaced by "_"."""
    if data_dir is None:
        return "fashion-mnist"
    name = data_dir.resolve().name or "images"
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def new_run_dir(root: Path, model: str, dataset: str, now: datetime.datetime | None = None) -> Path:
    """Make and return a fresh ``root/<model>-<dataset>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3`` ... if taken).

    The folder is created here (``mkdir`` without ``exist_ok``), so two runs started in the same
    second, even at the same time, get two folders.
    """
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=True)
    base = root / f"{model}-{dataset}-{stamp}"
    for i in range(1, 10_000):
        candidate = base if i == 1 else base.with_name(f"{base.name}-{i}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"{root} already holds 10,000 runs named {base.name}-*: clean it up")
