"""Batch prediction on image files: the work of ``python -m cvlab predict`` (lesson 09).

A checkpoint written by ``python -m cvlab train`` holds the architecture, its arguments, the
class names and the preprocessing (image size, channels, mean, std), so it is all a prediction
needs: ``cvlab.models.load_model`` rebuilds the model, ``cvlab.transforms.eval_transforms`` the
preprocessing. Files that cannot be read are named and skipped, never a stack trace.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import torch

from .images import IMAGE_EXTENSIONS, open_image
from .metrics import predict
from .transforms import eval_transforms
from .utils import progress_bar, write_atomically

__all__ = ["image_files", "predict_files", "write_predictions"]


def image_files(sources: Iterable[str | os.PathLike]) -> list[Path]:
    """The image files named by ``sources``: files as given, folders searched recursively for
    ``IMAGE_EXTENSIONS`` (sorted). A named file with another extension is kept (it may be an
    image; reading it will tell).

    Raises:
        FileNotFoundError: a source that does not exist. ValueError: no image file at all.
    """
    found: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found += sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        elif source.exists():
            found.append(source)
        else:
            raise FileNotFoundError(f"{source} does not exist: give image files or folders of images")
    if not found:
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(map(str, sources))}")
    return found


def predict_files(model: torch.nn.Module, checkpoint: dict, paths: Sequence[Path], *, k: int = 3,
                  batch_size: int = 64, device: torch.device | str | None = None,
                  progress: bool = False) -> tuple[list[dict], list[tuple[Path, str]]]:
    """The top-k classes of every readable image.

    Args:
        model: a classifier returning logits (B, num_classes).
        checkpoint: its checkpoint dict (``cvlab.models.load_model``): ``class_names`` and
            ``preprocess`` (``image_size`` pixels, ``channels``, ``mean``, ``std``).
        paths: image files.
        k: how many classes per image (at most the number of classes).
        batch_size: images per forward pass.
        progress: show a tqdm bar (on stderr).

    Returns:
        ``(rows, bad)``: one dict per readable image, ``{"file", "classes": [k names], "probs":
        [k softmax probabilities in [0, 1], descending]}``, in the order of ``paths``; and
        ``(path, reason)`` for each file that could not be read.

    Raises:
        ValueError: k < 1 or batch_size < 1; a checkpoint without class names or preprocessing
            (write it with ``cvlab train``).
    """
    names, pre = checkpoint.get("class_names"), checkpoint.get("preprocess")
    if not names or not pre:
        raise ValueError("the checkpoint has no class names or preprocessing: predict with one written by "
                         "python -m cvlab train (its best.pt or last.pt)")
    if k < 1 or batch_size < 1:
        raise ValueError(f"k and batch_size must be >= 1, got {k} and {batch_size}")
    k = min(k, len(names))
    transform = eval_transforms(pre["image_size"], pre["mean"], pre["std"], channels=pre["channels"])
    bad: list[tuple[Path, str]] = []

    def batches():  # (images, their indices in paths), streamed: a large folder never sits in memory
        images, indices = [], []
        for index, path in enumerate(progress_bar(paths, desc="predict", enabled=progress)):
            try:
                images.append(transform(open_image(path, "RGB")))
            except (ValueError, OSError) as exc:
                bad.append((Path(path), " ".join(str(exc).split())))
                continue
            indices.append(index)
            if len(images) == batch_size:
                yield torch.stack(images), torch.tensor(indices)
                images, indices = [], []
        if images:
            yield torch.stack(images), torch.tensor(indices)

    try:
        probs, indices = predict(model, batches(), device)
    except ValueError:
        if len(bad) < len(paths):  # the model's error, not "no file could be read"
            raise
        return [], bad
    top = probs.topk(k, dim=1)
    rows = [{"file": str(paths[i]), "classes": [names[j] for j in c], "probs": p}
            for i, c, p in zip(indices.tolist(), top.indices.tolist(), top.values.tolist())]
    return rows, bad


def write_predictions(rows: Sequence[dict], path: str | os.PathLike | None) -> str:
    """Write prediction rows as CSV (``file, class_1, prob_1, …``) or, for a ``.json`` path, JSON;
    atomically (a temporary file renamed into place). ``path`` None: return the CSV text only.

    Returns:
        the text written.
    """
    if path is not None and str(path).lower().endswith(".json"):
        text = json.dumps(list(rows), indent=1) + "\n"
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        k = max((len(r["classes"]) for r in rows), default=0)
        writer.writerow(["file"] + [f"{c}_{i}" for i in range(1, k + 1) for c in ("class", "prob")])
        for r in rows:
            writer.writerow([r["file"]] + [v for c, p in zip(r["classes"], r["probs"]) for v in (c, f"{p:.4f}")])
        text = buffer.getvalue()
    if path is not None:
        write_atomically(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), overwrite=True)
    return text


def add_predict_parser(sub):
    """The ``predict`` sub-command's options (``cvlab.cli.build_parser`` adds it)."""
    import argparse

    p = sub.add_parser("predict", help="top-k classes of image files with a checkpoint from cvlab train",
                       description="Predict the top-k classes of image files (or folders of them) with a checkpoint "
                                   "from python -m cvlab train; unreadable files are named and skipped.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="best.pt or last.pt of a cvlab train run (or its run folder)")
    p.add_argument("images", nargs="+", type=Path, help="image files and/or folders (searched recursively)")
    p.add_argument("--top-k", type=int, default=3, help="classes per image")
    p.add_argument("--output", type=Path, help="write CSV (or JSON for a .json name) here; default: CSV on stdout")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the best available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p
