"""Latency on this CPU (lesson 09): timing a model batch 1, counting its multiply-adds, and the table
that picks an architecture for deployment: latency beside parameters, GFLOPS and ImageNet accuracy.

``measure_latency`` times any callable (a PyTorch model, a TorchScript or ``torch.export`` module
read back from a file, an ONNX Runtime session wrapped in a function): warm-up calls first, then
the median and 90th percentile of timed calls in milliseconds, the median because on a shared CPU
a few calls are slowed by other programs. ``latency_table`` builds torchvision's classifiers with
random weights (their speed does not depend on the weights, and nothing is downloaded) and reads
their accuracy and GFLOPS from the weights' ``meta``. ``format_table`` prints the rows of this
module, ``cvlab.deployment`` and ``cvlab.quantization`` as one fixed-width table.

Sources: PyTorch docs ``torch.utils.flop_counter.FlopCounterMode``; torchvision docs "Models and
pre-trained weights" (``get_model``, ``get_model_weights``, the weights' ``meta``).
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from .models import count_parameters
from .pretrained import model_zoo
from .utils import model_mode, progress_bar

__all__ = ["count_gflops", "format_table", "latency_table", "measure_latency"]


def _eval_mode(fn: Any):
    """``model_mode(fn, False)`` for a module that can switch modes; a no-op for other callables and for
    ``torch.export``'s modules (``ExportedProgram.module()``), which keep the mode they were exported in."""
    if not isinstance(fn, nn.Module):
        return contextlib.nullcontext()
    try:
        fn.train(fn.training)
    except NotImplementedError:
        return contextlib.nullcontext()
    return model_mode(fn, False)


def measure_latency(fn: Callable[[Any], Any], example: Any, *, warmup: int = 5, runs: int = 30) -> dict[str, float]:
    """Time ``fn(example)``: ``warmup`` untimed calls, then ``runs`` timed ones (``time.perf_counter``).

    Args:
        fn: a model (run in eval mode without gradients, then put back in its mode; a module read
            back from ``torch.export`` runs in the mode it was exported in) or any callable,
            e.g. ``lambda x: cvlab.deployment.run_onnx(session, x)``.
        example: its input, e.g. float32 (1, C, H, W) for batch-1 latency.
        warmup, runs: untimed and timed calls (the first calls allocate memory and pick kernels).

    Returns:
        ``{"median_ms", "p90_ms", "min_ms", "runs"}``: milliseconds per call. The median, not the
        mean: on a shared CPU a few runs are slowed by other programs.

    Raises:
        ValueError: runs < 1 or warmup < 0.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    times = []
    with _eval_mode(fn), torch.no_grad():
        for _ in range(warmup):
            fn(example)
        for _ in range(runs):
            start = time.perf_counter()
            fn(example)
            times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
            "min_ms": float(min(times)), "runs": runs}


def format_table(rows: Iterable[Mapping[str, Any]], columns: Iterable[str] | None = None) -> str:
    """A fixed-width text table of dict rows (``export_report``, ``latency_table``, ``quantization_report``).

    Args:
        rows: dicts with the same keys.
        columns: the keys to show, in order; None: all keys of the first row.

    Floats are shown by their unit: ``*_ms``, ``*_s`` and accuracies (%) with 2 decimals, ``*_mb`` with 3,
    ``max_abs_diff`` as 1.2e-07, NaN as "-"; True/False as yes/no. The last column is not padded.

    Raises:
        ValueError: no rows, or a column no row has.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("no rows to tabulate")
    columns = list(columns or rows[0])
    missing = [c for c in columns if all(c not in r for r in rows)]
    if missing:
        raise ValueError(f"no row has the column(s) {missing}; the rows have {list(rows[0])}")

    def cell(key: str, v: Any) -> str:
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            if math.isnan(v):
                return "-"
            if key == "max_abs_diff":
                return f"{v:.1e}"
            if key.endswith("_mb"):
                return f"{v:.3f}"
            return f"{v:.2f}" if key.endswith(("_ms", "_s", "acc1", "accuracy")) else f"{v:.3g}"
        return "" if v is None else str(v)

    table = [[cell(c, r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(columns)]
    padded = [[f"{v:{w}s}" for v, w in zip(line[:-1], widths)] + line[-1:] for line in [columns, *table]]
    return "\n".join("  ".join(line).rstrip() for line in padded)


def count_gflops(model: nn.Module, example: torch.Tensor) -> float:
    """Multiply-adds of one forward pass, in billions (``torch.utils.flop_counter.FlopCounterMode``
    counts 2 FLOPs per multiply-add; this halves it to match torchvision's ``meta["_ops"]``)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with model_mode(model, False), torch.no_grad(), counter:
        model(example)
    return counter.get_total_flops() / 2e9


def latency_table(models: Mapping[str, nn.Module | str], input_size: tuple[int, int, int] = (3, 224, 224), *,
                  warmup: int = 3, runs: int = 10, progress: bool = False) -> list[dict[str, Any]]:
    """Batch-1 latency on this CPU of each model, beside its size, GFLOPS and ImageNet accuracy.

    Args:
        models: display name -> an ``nn.Module`` (e.g. ``CompactCNN(in_channels=3, num_classes=1000,
            image_size=224)``) or a torchvision classification model name (e.g. "mobilenet_v3_small"),
            built with random weights (``torchvision.models.get_model(name, weights=None)``): the
            same speed as trained ones, and nothing is downloaded.
        input_size: (C, H, W) of the batch-1 float32 input every model gets, pixels.
        warmup, runs: as ``measure_latency``.
        progress: a bar over the models.

    Returns:
        one dict per model, in order: ``model``, ``params_m`` (millions), ``gflops`` (multiply-adds
        per image at ``input_size``, counted, torchvision's convention), ``meta_gflops`` and ``acc1``
        (torchvision's DEFAULT weights' ``meta``: GFLOPS at their crop size, ImageNet-1K top-1 %;
        NaN for other models), ``latency_ms`` and ``p90_ms``.

    Raises:
        ValueError: an unknown torchvision name, or an input the model cannot take (the model's message).
    """
    from torchvision import models as tvm

    rows, zoo = [], None
    x = torch.rand(1, *input_size)
    for name, model in progress_bar(list(models.items()), desc="latency", enabled=progress, unit="model"):
        meta = {"meta_gflops": math.nan, "acc1": math.nan}
        if isinstance(model, str):
            if model not in tvm.list_models(module=tvm):
                raise ValueError(f"{model!r} is not a torchvision classification model; choose one of "
                                 "torchvision.models.list_models(module=torchvision.models)")
            zoo = zoo or {r["model"]: r for r in model_zoo()}  # the weights' meta, read once
            meta = {"meta_gflops": float(zoo[model]["gflops"]), "acc1": float(zoo[model]["acc1"])}
            model = tvm.get_model(model, weights=None)
        timing = measure_latency(model, x, warmup=warmup, runs=runs)
        rows.append({"model": name, "params_m": count_parameters(model) / 1e6, "gflops": count_gflops(model, x),
                     **meta, "latency_ms": timing["median_ms"], "p90_ms": timing["p90_ms"]})
    return rows
