"""Deployment (lesson 09): a trained model out of the notebook, exported, served and measured on the CPU.

* Export: TorchScript (``torch.jit.trace`` / ``torch.jit.script``, both deprecated in torch 2.14 in
  favour of ``torch.export``), ``torch.export`` (an ``ExportedProgram`` saved as ``.pt2``), and ONNX
  with both of torch's exporters: the ``torch.export``-based one (``dynamo=True``, the default since
  torch 2.9) and the legacy TorchScript-based one (``dynamo=False``, deprecated).
* Serving: ONNX Runtime's ``InferenceSession`` with the ``CPUExecutionProvider``.
* Checking: parity (the largest absolute difference from eager PyTorch's outputs) and batch-1
  latency (``cvlab.latency.measure_latency``: median and 90th percentile after warm-up, in ms),
  one row per format, printed with ``cvlab.latency.format_table``.

Everything runs on the CPU, in eval mode (the model is put back in its mode afterwards). Files are
written atomically (a temporary file in the same folder, then ``os.replace``), never over an
existing file unless ``overwrite=True``. Sources: PyTorch docs "torch.export", "torch.onnx"
(``torch.onnx.export``), "TorchScript"; ONNX Runtime docs, Python API (``InferenceSession``,
``SessionOptions``). int8 quantization is in ``cvlab.quantization``; choosing an architecture by
its latency in ``cvlab.latency``.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from .latency import measure_latency
from .utils import model_mode, progress_bar, write_atomically

__all__ = ["DYNAMO_OPSET", "FORMATS", "LEGACY_OPSET", "export_onnx", "export_report", "max_abs_diff", "onnx_opset",
           "onnx_session", "run_onnx"]  # files are written with cvlab.utils.write_atomically

#: the formats ``export_report`` knows, in its default order ("eager" is the PyTorch baseline)
FORMATS = ("eager", "jit_trace", "jit_script", "torch_export", "onnx_dynamo", "onnx_legacy")
_SUFFIX = {"eager": ".pt", "jit_trace": ".pt", "jit_script": ".pt", "torch_export": ".pt2", "onnx_dynamo": ".onnx",
           "onnx_legacy": ".onnx"}
#: ONNX opsets used unless asked otherwise: 17 for the legacy exporter; 18 for the dynamo one, the
#: lowest it implements (asked for 17 it converts down, which fails for LRASPP's Resize and keeps 18)
LEGACY_OPSET, DYNAMO_OPSET = 17, 18


def _flatten(out: Any) -> list[torch.Tensor]:
    """The tensors of a nested output (tensor, array, dict, list, tuple, number), in order."""
    if isinstance(out, (torch.Tensor, np.ndarray, int, float, bool)):
        return [torch.as_tensor(out)]
    if isinstance(out, Mapping):
        return [t for v in out.values() for t in _flatten(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _flatten(v)]
    raise TypeError(f"cannot compare a {type(out).__name__}: give tensors, arrays, or dicts/lists/tuples of them")


def max_abs_diff(a: Any, b: Any) -> float:
    """The largest absolute difference between two outputs, e.g. eager PyTorch's and ONNX Runtime's.

    Args:
        a, b: tensors or NumPy arrays, or dicts / lists / tuples of them (a detector's list of
            ``{"boxes", "scores", "labels"}``, a segmenter's ``{"out": logits}``); both are flattened
            into their tensors in order (dict values in insertion order) and compared in float64.

    Returns:
        max |a - b| over every element, in the outputs' units (0.0 when both hold no elements).

    Raises:
        ValueError: a different number of tensors, or two tensors of different shapes (a detector
            that kept another number of boxes); the message names which.
        TypeError: something that is not a tensor, array, number or container of them.
    """
    xs, ys = _flatten(a), _flatten(b)
    if len(xs) != len(ys):
        raise ValueError(f"the outputs hold {len(xs)} and {len(ys)} tensors: compare outputs of the same model")
    worst = 0.0
    for i, (x, y) in enumerate(zip(xs, ys)):
        if tuple(x.shape) != tuple(y.shape):
            raise ValueError(f"output tensor {i} has shape {tuple(x.shape)} in one and {tuple(y.shape)} in the other")
        if x.numel():
            worst = max(worst, float((x.detach().cpu().double() - y.detach().cpu().double()).abs().max()))
    return worst


@contextlib.contextmanager
def _quiet(pass_deprecations: bool = False):
    """Keep exporters' progress lines, logs (tracebacks of fallbacks, graph dumps) and warnings off
    the screen; yields the list of caught warnings. ``pass_deprecations``: issue the deprecation
    warnings again afterwards, from where they came (the usual filters then decide what shows)."""
    before = logging.root.manager.disable
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("always")
        logging.disable(logging.CRITICAL)
        try:
            yield caught
        finally:
            logging.disable(before)
    for w in caught if pass_deprecations else ():
        if issubclass(w.category, (DeprecationWarning, FutureWarning)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _output_files(stack: contextlib.ExitStack, folder: str | os.PathLike | None, names: Mapping[str, str],
                  overwrite: bool) -> dict[str, Path]:
    """The paths ``folder/<file name>`` by key; ``folder`` None: a temporary folder that ``stack`` deletes.
    Raises FileExistsError, before anything is written, when one exists and ``overwrite`` is False."""
    root = Path(folder) if folder is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
    paths = {key: root / name for key, name in names.items()}
    taken = [str(p) for p in paths.values() if p.exists()]
    if taken and not overwrite:
        raise FileExistsError(f"{', '.join(taken)} exist(s): pass overwrite=True or choose another folder")
    return paths


def _one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (+ where, + the cause's first line): no traceback."""
    def first(e: BaseException, where: bool) -> str:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
        line = next((s.strip() for s in text.splitlines() if s.strip()), "")
        line = re.sub(r"\s*\(unhinted:.*\)", "", re.split(r"(?<=\.)\s", re.sub(r"\s+", " ", line))[0])[:140]
        at = re.search(r'File "([^"]+)", line (\d+)', text) or re.search(r"Caused by: \(([^)]+?):(\d+)", text)
        return f"{type(e).__name__}: {line}" + (f" (at {Path(at[1]).name}:{at[2]})" if at and where else "")
    cause = exc.__cause__
    return first(exc, cause is None) + (f" <- {first(cause, True)}" if cause is not None else "")


def _deprecations(caught: Iterable[warnings.WarningMessage]) -> str:
    """The first sentence of each distinct deprecation warning, joined by " | "."""
    seen: list[str] = []
    for w in caught:
        if issubclass(w.category, (DeprecationWarning, FutureWarning)):
            sentence = re.split(r"(?<=\.)\s", str(w.message).strip())[0][:120]
            if sentence not in seen:
                seen.append(sentence)
    return " | ".join(seen)


def export_onnx(model: nn.Module, example: Any, path: str | os.PathLike, *, dynamo: bool = True,
                opset: int | None = None, dynamic_batch: bool = False, overwrite: bool = False) -> Path:
    """Export ``model`` to one ONNX file with ``torch.onnx.export``, atomically.

    Args:
        model: run in eval mode (and put back in its mode), on the CPU.
        example: its input: a tensor, e.g. float32 (1, C, H, W), or a list of images for a
            torchvision detector (``model(example)`` must work).
        path: the ``.onnx`` file; weights are stored inside it (``external_data=False``; < 2 GB).
        dynamo: True for the ``torch.export``-based exporter (torch's default), False for the
            legacy TorchScript-based one (deprecated; the one torchvision's detectors export with).
        opset: ONNX operator set; None: ``DYNAMO_OPSET`` (18) or ``LEGACY_OPSET`` (17). The dynamo
            exporter implements 18 and up: asked for less it converts down where ``onnx`` can, else
            keeps 18 (``onnx_opset(path)`` says which the file got).
        dynamic_batch: any batch size at run time (axis 0 of a tensor ``example``; the legacy
            exporter names it "batch"), not only the example's.
        overwrite: replace an existing file.

    Returns:
        ``path``. The exporters' progress lines, logs and other warnings are kept off the screen;
        deprecation warnings are passed on.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        ValueError: ``dynamic_batch`` with an ``example`` that is not one tensor.
        torch.onnx.OnnxExporterError / RuntimeError / ...: the exporter failed (e.g. the dynamo
            exporter on a detector's data-dependent shapes); the file is not written.
    """
    opset = opset or (DYNAMO_OPSET if dynamo else LEGACY_OPSET)
    extra: dict[str, Any] = {}
    if dynamic_batch and not isinstance(example, torch.Tensor):
        raise ValueError(f"dynamic_batch=True needs one tensor as example (batch on axis 0), got "
                         f"{type(example).__name__}: export with dynamic_batch=False")
    with model_mode(model, False):
        if dynamic_batch and dynamo:
            extra["dynamic_shapes"] = ({0: torch.export.Dim.DYNAMIC},)
        elif dynamic_batch:
            with torch.no_grad():
                outputs = [f"output{i}" for i in range(len(_flatten(model(example))))]
            extra = {"input_names": ["input"], "output_names": outputs,
                     "dynamic_axes": {name: {0: "batch"} for name in ["input", *outputs]}}

        def write(tmp: str) -> None:
            with _quiet(pass_deprecations=True):
                torch.onnx.export(model, (example,), tmp, dynamo=dynamo, opset_version=opset, external_data=False,
                                  **extra)
        return write_atomically(path, write, overwrite=overwrite)


def onnx_opset(path: str | os.PathLike) -> int:
    """The default-domain ONNX opset an ``.onnx`` file declares (its weights are not read)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def onnx_session(path: str | os.PathLike, *, threads: int | None = None):
    """An ONNX Runtime ``InferenceSession`` on the CPU (``CPUExecutionProvider``), all graph optimisations on.

    Args:
        path: an ``.onnx`` file (``export_onnx`` writes them).
        threads: intra-op threads; None: ``torch.get_num_threads()``, so that latencies compare
            with PyTorch's on the same cores.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: ONNX Runtime cannot load it (not ONNX, truncated, an operator it lacks).
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX model at {path}: write one with export_onnx(model, example, path)")
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads or torch.get_num_threads(), 1
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ValueError(f"ONNX Runtime cannot load {path} ({_one_line(exc)}): export the model again with "
                         "export_onnx(model, example, path, overwrite=True)") from None


def run_onnx(session: Any, example: Any) -> list[np.ndarray]:
    """Run an ONNX Runtime session on ``example``'s tensors, fed to the graph's inputs in order.

    Args:
        session: from ``onnx_session``.
        example: what the PyTorch model took: a tensor, or a list of tensors (a detector's images).

    Returns:
        the graph's outputs as NumPy arrays, in order (compare with ``max_abs_diff``).

    Raises:
        ValueError: a different number of tensors than the graph has inputs.
    """
    arrays = [t.detach().cpu().numpy() for t in _flatten(example)]
    names = [i.name for i in session.get_inputs()]
    if len(arrays) != len(names):
        raise ValueError(f"the ONNX graph takes {len(names)} input(s) {names}, got {len(arrays)} tensor(s): "
                         "give what the exported model took")
    return session.run(None, dict(zip(names, arrays)))


def _export(fmt: str, model: nn.Module, example: Any, path: Path, overwrite: bool) -> Callable[[Any], Any]:
    """Write ``model`` to ``path`` as ``fmt``; return a callable that runs the file read back."""
    if fmt == "eager":
        write_atomically(path, lambda tmp: torch.save(model.state_dict(), tmp), overwrite=overwrite)
        return model
    if fmt in ("jit_trace", "jit_script"):
        scripted = torch.jit.trace(model, (example,), strict=False) if fmt == "jit_trace" else torch.jit.script(model)
        write_atomically(path, lambda tmp: torch.jit.save(scripted, tmp), overwrite=overwrite)
        return torch.jit.load(str(path)).eval()
    if fmt == "torch_export":
        program = torch.export.export(model, (example,))
        write_atomically(path, lambda tmp: torch.export.save(program, tmp), overwrite=overwrite)
        return torch.export.load(str(path)).module()
    export_onnx(model, example, path, dynamo=fmt == "onnx_dynamo", overwrite=overwrite)
    session = onnx_session(path)
    return lambda x: run_onnx(session, x)


def export_report(model: nn.Module, example: Any, formats: Iterable[str] = FORMATS, *,
                  folder: str | os.PathLike | None = None, warmup: int = 3, runs: int = 20,
                  overwrite: bool = False, progress: bool = False) -> list[dict[str, Any]]:
    """Export ``model`` in each format, read the file back, run it, and compare it with eager PyTorch.

    Args:
        model: run in eval mode on the CPU (put back in its mode afterwards).
        example: its batch-1 input (a tensor, e.g. float32 (1, 1, 28, 28); a list of one
            (3, H, W) image for a torchvision detector).
        formats: some of ``FORMATS``: "eager" (``state_dict`` with ``torch.save``), "jit_trace",
            "jit_script" (``torch.jit.save``), "torch_export" (``torch.export.save``, ``.pt2``),
            "onnx_dynamo", "onnx_legacy" (``export_onnx``, run with ONNX Runtime).
        folder: where the files go (``<format>.pt`` / ``.pt2`` / ``.onnx``); None: a temporary folder,
            deleted afterwards.
        warmup, runs: as ``measure_latency``.
        overwrite: replace files already in ``folder``.
        progress: a bar over the formats.

    Returns:
        one dict per format: ``format``; ``works`` (exported, read back, ran, same output shapes);
        ``error`` ("" or one line: the stage that failed and the exception's first line);
        ``max_abs_diff`` (vs eager PyTorch's outputs); ``latency_ms`` / ``p90_ms`` (batch-1 median
        and 90th percentile); ``size_mb`` (the file, MB = 10**6 bytes); ``export_s`` (seconds to
        export and write, or until the exporter failed); ``opset`` (ONNX only, else None); ``deprecations`` (the warnings' first
        sentences). An exporter that fails gives its row, never a traceback.

    Raises:
        ValueError: an unknown format.
        FileExistsError: a file of ``folder`` exists and ``overwrite`` is False (nothing is run).
    """
    formats = list(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown format(s) {unknown}: choose from {list(FORMATS)}")
    with contextlib.ExitStack() as stack:
        paths = _output_files(stack, folder, {f: f"{f}{_SUFFIX[f]}" for f in formats}, overwrite)
        stack.enter_context(model_mode(model, False))
        with torch.no_grad():
            reference = model(example)
        rows = []
        for fmt in progress_bar(formats, desc="export", enabled=progress, unit="format"):
            row = {"format": fmt, "works": False, "error": "", "max_abs_diff": math.nan, "latency_ms": math.nan,
                   "p90_ms": math.nan, "size_mb": math.nan, "export_s": math.nan, "opset": None, "deprecations": ""}
            stage = "export"
            with _quiet() as caught:
                try:
                    start = time.perf_counter()
                    runner = _export(fmt, model, example, paths[fmt], overwrite)
                    row["export_s"] = time.perf_counter() - start
                    row["size_mb"] = paths[fmt].stat().st_size / 1e6
                    row["opset"] = onnx_opset(paths[fmt]) if fmt.startswith("onnx") else None
                    stage = "run"
                    with torch.no_grad():
                        output = runner(example)
                    stage = "compare"
                    row["max_abs_diff"] = max_abs_diff(reference, output)
                    stage = "time"
                    timing = measure_latency(runner, example, warmup=warmup, runs=runs)
                    row.update(works=True, latency_ms=timing["median_ms"], p90_ms=timing["p90_ms"])
                except Exception as exc:  # one row per format: the failure is the lesson's point
                    row["error"] = f"{stage} failed: {_one_line(exc)}"
                    if stage == "export":  # what trying cost
                        row["export_s"] = time.perf_counter() - start
            row["deprecations"] = _deprecations(caught)
            rows.append(row)
    return rows
