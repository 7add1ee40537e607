"""int8 quantization for deployment on a CPU (lesson 09): PyTorch's and ONNX Runtime's, side by side.

Post-training quantization stores weights as 8-bit integers (a scale and zero point per tensor or
per output channel) and computes with integer kernels: files about 4x smaller, often faster, and
a small accuracy loss that must be measured. Two ways, two libraries:

* dynamic: weights quantized ahead of time, activations at run time from their observed range;
  PyTorch's ``quantize_dynamic`` quantizes only ``nn.Linear`` (and recurrent) layers, so it barely
  touches a CNN; ONNX Runtime's ``quantize_dynamic`` also quantizes convolutions (``ConvInteger``).
* static: activation ranges measured once on calibration images (a few hundred), BatchNorm folded
  into the convolutions; PyTorch's FX graph mode (``prepare_fx`` / ``convert_fx``) or ONNX Runtime's
  ``quantize_static`` with a ``CalibrationDataReader`` (QDQ format, per-channel weights).

In torch 2.14 ``torch.ao.quantization`` still works on x86 CPUs (the "x86" engine: fbgemm + oneDNN;
"qnnpack" on ARM) but warns that it is deprecated and will be removed (its successor, torchao, is a
separate package); ONNX Runtime's tools are the path that stays. ``quantization_report`` measures
all of them in one table. Sources: PyTorch docs "Quantization" (``torch.ao.quantization``,
``quantize_fx``); ONNX Runtime docs "Quantize ONNX models" (``onnxruntime.quantization``).
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from .deployment import _deprecations, _one_line, _output_files, _quiet, export_onnx, onnx_session, run_onnx
from .images import to_float_images
from .latency import measure_latency
from .metrics import accuracy
from .utils import model_mode, progress_bar, write_atomically

__all__ = ["QUANT_METHODS", "quantization_report", "quantize_dynamic_torch", "quantize_onnx_dynamic",
           "quantize_onnx_static", "quantize_static_torch"]

#: what ``quantization_report`` compares, in its default order
QUANT_METHODS = ("torch_float32", "torch_int8_dynamic", "torch_int8_static",
                 "onnx_float32", "onnx_int8_dynamic", "onnx_int8_static")


def _as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] (N, C, H, W) -> float32 [0, 1]."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a tensor (N, C, H, W), got {getattr(images, 'shape', type(images).__name__)}:"
                         " e.g. cvlab.datasets.fashion_mnist_tensors('test')[0]")
    return to_float_images(images) if images.dtype == torch.uint8 else images.float()


def quantize_dynamic_torch(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` in dynamic int8 (``torch.ao.quantization.quantize_dynamic``).

    Returns:
        the quantized copy in eval mode, on the CPU (``model`` is left as it is). Same inputs and
        outputs as ``model``; convolutions stay float32.
    """
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(copy.deepcopy(model).cpu().eval(), {nn.Linear}, dtype=torch.qint8)


def quantize_static_torch(model: nn.Module, calibration: torch.Tensor, *, batch_size: int = 64) -> nn.Module:
    """A statically quantized int8 copy of ``model``: PyTorch's FX graph mode (``prepare_fx``, observers
    run on ``calibration``, ``convert_fx``) with the default qconfig of the CPU's quantized engine
    (``torch.backends.quantized.engine``: "x86" on Intel/AMD, "qnnpack" on ARM).

    Args:
        model: traceable by ``torch.fx`` (the course's CNNs are); left as it is.
        calibration: a few hundred typical inputs, uint8 [0, 255] or float32 [0, 1] (N, C, H, W).
        batch_size: calibration batch size.

    Returns:
        a ``GraphModule`` in eval mode taking float32 inputs and returning float32 logits
        (quantize and dequantize steps inside; Conv-BatchNorm-ReLU fused).

    Raises:
        ValueError: calibration that is not (N, C, H, W).
        torch.fx.proxy.TraceError: a model ``torch.fx`` cannot trace (data-dependent control flow).
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    x = _as_float(calibration)
    with _quiet(pass_deprecations=True):  # the observers' UserWarnings off the screen; the deprecation stays
        prepared = prepare_fx(copy.deepcopy(model).cpu().eval(),
                              get_default_qconfig_mapping(torch.backends.quantized.engine), (x[:1],))
        with torch.no_grad():
            for batch in x.split(batch_size):
                prepared(batch)
        return convert_fx(prepared).eval()


def _preprocessed(src: Path, folder: Path) -> Path:
    """ONNX Runtime's recommended pre-processing (shape inference, graph optimisation) of ``src``."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = folder / f"{src.stem}.pre.onnx"
    quant_pre_process(str(src), str(out))
    return out


def quantize_onnx_dynamic(src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """int8 weights, activations quantized at run time: ONNX Runtime's ``quantize_dynamic`` (after
    its ``quant_pre_process``), convolutions and matrix products included; written atomically.

    Args:
        src: a float32 ``.onnx`` model (``cvlab.deployment.export_onnx``).
        dst: the quantized model's file.
        overwrite: replace an existing ``dst``.

    Returns:
        ``dst``.

    Raises:
        FileNotFoundError: no ``src``. FileExistsError: ``dst`` exists and ``overwrite`` is False.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"no ONNX model at {src}: export one with cvlab.deployment.export_onnx")
    with tempfile.TemporaryDirectory() as tmp, _quiet(pass_deprecations=True):
        pre = _preprocessed(src, Path(tmp))
        return write_atomically(dst, lambda out: quantize_dynamic(str(pre), out, weight_type=QuantType.QInt8),
                                overwrite=overwrite)


def quantize_onnx_static(src: str | os.PathLike, dst: str | os.PathLike, calibration: torch.Tensor, *,
                         batch_size: int = 32, per_channel: bool = True, overwrite: bool = False) -> Path:
    """int8 weights and activations, ranges from calibration images: ONNX Runtime's ``quantize_static``
    (QDQ format, int8 activations and weights, MinMax calibration) after ``quant_pre_process``.

    Args:
        src: a float32 ``.onnx`` model whose batch axis is dynamic (``export_onnx(..., dynamic_batch=True)``)
            or equal to ``batch_size``.
        dst: the quantized model's file.
        calibration: a few hundred typical inputs, uint8 [0, 255] or float32 [0, 1] (N, C, H, W),
            fed in batches by a ``CalibrationDataReader``.
        batch_size: calibration batch size.
        per_channel: one scale per output channel of each weight (more accurate for CNNs).
        overwrite: replace an existing ``dst``.

    Returns:
        ``dst``.

    Raises:
        FileNotFoundError: no ``src``. FileExistsError: ``dst`` exists and ``overwrite`` is False.
        ValueError: calibration that is not (N, C, H, W).
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    src, x = Path(src), _as_float(calibration)
    if not src.is_file():
        raise FileNotFoundError(f"no ONNX model at {src}: export one with cvlab.deployment.export_onnx")

    class Reader(CalibrationDataReader):
        def __init__(self, name: str):
            self.batches = iter([{name: b.numpy()} for b in x.split(batch_size)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp, _quiet(pass_deprecations=True):
        pre = _preprocessed(src, Path(tmp))
        reader = Reader(onnx_session(pre).get_inputs()[0].name)
        return write_atomically(dst, lambda out: quantize_static(
            str(pre), out, reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8), overwrite=overwrite)


def _accuracy(run, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    with torch.no_grad():
        preds = torch.cat([torch.as_tensor(np.asarray(run(b))).argmax(1) for b in x.split(batch_size)])
    return accuracy(y, preds)


def quantization_report(model: nn.Module, calibration: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, *,
                        methods: Iterable[str] = QUANT_METHODS, folder: str | os.PathLike | None = None,
                        warmup: int = 5, runs: int = 30, batch_size: int = 256, overwrite: bool = False,
                        progress: bool = False) -> list[dict[str, Any]]:
    """Quantize a classifier each way and measure accuracy, batch-1 latency and size against float32.

    Args:
        model: a trained classifier returning logits (B, num_classes), e.g. ``CompactCNN``; it is
            copied, never changed, and left in its mode.
        calibration: a few hundred training inputs for the static methods, uint8 [0, 255] or
            float32 [0, 1] (N, C, H, W), the model's input scale.
        images, labels: the test set: inputs as ``calibration``, int64 (N,) class indices.
        methods: some of ``QUANT_METHODS``: "torch_float32" and "onnx_float32" (the baselines),
            "torch_int8_dynamic" / "torch_int8_static" (``torch.ao.quantization``),
            "onnx_int8_dynamic" / "onnx_int8_static" (``onnxruntime.quantization``).
        folder: where the ONNX files go (``model.onnx``, ``model_int8_dynamic.onnx``,
            ``model_int8_static.onnx``); None: a temporary folder, deleted afterwards.
        warmup, runs: as ``cvlab.latency.measure_latency`` (batch 1: the first test image).
        batch_size: batch size for the accuracy pass.
        overwrite: replace files already in ``folder``.
        progress: a bar over the methods.

    Returns:
        one dict per method: ``method``, ``works``, ``error`` ("" or one line), ``accuracy`` (% of
        ``images``), ``latency_ms`` / ``p90_ms`` (batch 1), ``size_mb`` (the ``.onnx`` file, or the
        PyTorch model's ``state_dict`` as ``torch.save`` writes it; MB = 10**6 bytes),
        ``deprecations`` (the warnings' first sentences).

    Raises:
        ValueError: an unknown method, or images and labels of different lengths.
        FileExistsError: a file in ``folder`` exists and ``overwrite`` is False.
    """
    methods = list(methods)
    unknown = [m for m in methods if m not in QUANT_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}: choose from {list(QUANT_METHODS)}")
    x, calib, y = _as_float(images), _as_float(calibration), torch.as_tensor(labels).long()
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels: they must match one to one")
    with contextlib.ExitStack() as stack:
        files = _output_files(stack, folder, {"onnx_float32": "model.onnx", "onnx_int8_dynamic": "model_int8_dynamic.onnx",
                                              "onnx_int8_static": "model_int8_static.onnx"}, overwrite)
        stack.enter_context(model_mode(model, False))
        float_onnx, exported, rows = files["onnx_float32"], False, []
        for method in progress_bar(methods, desc="quantize", enabled=progress, unit="method"):
            row = {"method": method, "works": False, "error": "", "accuracy": math.nan, "latency_ms": math.nan,
                   "p90_ms": math.nan, "size_mb": math.nan, "deprecations": ""}
            stage = "quantize"
            with _quiet() as caught:
                try:
                    if method.startswith("torch"):
                        q = {"torch_float32": lambda: model,
                             "torch_int8_dynamic": lambda: quantize_dynamic_torch(model),
                             "torch_int8_static": lambda: quantize_static_torch(model, calib)}[method]()
                        buffer = io.BytesIO()
                        torch.save(q.state_dict(), buffer)
                        row["size_mb"], run = buffer.getbuffer().nbytes / 1e6, q
                    else:
                        if not exported:  # the float32 model every ONNX method starts from, once
                            export_onnx(model, x[:1], float_onnx, dynamic_batch=True, overwrite=overwrite)
                            exported = True
                        if method == "onnx_int8_dynamic":
                            quantize_onnx_dynamic(float_onnx, files[method], overwrite=overwrite)
                        elif method == "onnx_int8_static":
                            quantize_onnx_static(float_onnx, files[method], calib, overwrite=overwrite)
                        session = onnx_session(files[method])
                        row["size_mb"] = files[method].stat().st_size / 1e6
                        run = lambda b, s=session: run_onnx(s, b)[0]  # noqa: E731
                    stage = "run"
                    row["accuracy"] = _accuracy(run, x, y, batch_size)
                    timing = measure_latency(run, x[:1], warmup=warmup, runs=runs)
                    row.update(works=True, latency_ms=timing["median_ms"], p90_ms=timing["p90_ms"])
                except Exception as exc:  # a method that fails gives its row, not a traceback
                    row["error"] = f"{stage} failed: {_one_line(exc)}"
            row["deprecations"] = _deprecations(caught)
            rows.append(row)
    return rows
