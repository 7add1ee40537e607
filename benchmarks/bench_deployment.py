"""Benchmark: lesson 09's tables on this CPU: export, parity and latency; int8 quantization; model choice.

1. ``cvlab.deployment.export_report`` for the course's three models: lesson 02's CompactCNN
   (1x28x28; the checkpoint ``data/checkpoints/02_compact_cnn.pt`` that lesson 02 writes, or one
   trained here for 1 epoch on 20,000 images), lesson 07's LRASPP-MobileNetV2 (3x96x96) and lesson
   06's FCOS-MobileNetV2 (one 3x96x96 image, 10 classes; an untrained head with its score
   threshold lowered to 0.05, so that it returns boxes to compare). Every format: TorchScript
   trace and script, torch.export, ONNX with the dynamo and the legacy exporter (run by ONNX
   Runtime); per format the largest difference from eager PyTorch, batch-1 latency (median and
   90th percentile, ms), file size and export time.
2. ``cvlab.quantization.quantization_report`` for the CompactCNN: float32 and int8 (dynamic,
   static) with torch.ao and with ONNX Runtime; accuracy on the 10,000 test images, latency, size.
3. ``cvlab.latency.latency_table``: batch-1 latency at 3x224x224 of the course's CNNs and some of
   torchvision's classifiers (random weights), with parameters, GFLOPS and ImageNet top-1 from
   torchvision's weights' meta.

Prints the tables with the CPU model and how long each part took (what a lesson would spend).
Latencies on a shared 2-core machine vary by 10-20 % from run to run. Not a test; it asserts nothing.

Usage:  .venv/bin/python benchmarks/bench_deployment.py [--runs 30] [--train] [--avx2]
"""
from __future__ import annotations

import argparse
import time

import onnxruntime
import torch

import cvlab
from _common import LESSON_SCENES, parse_args
from cvlab.datasets import data_root, fashion_mnist_tensors
from cvlab.deployment import export_report
from cvlab.detectors import fcos_mobilenet_v2
from cvlab.latency import format_table, latency_table
from cvlab.loaders import InMemoryLoader
from cvlab.models import CompactCNN, TinyVGG, load_model
from cvlab.quantization import quantization_report
from cvlab.segmenters import lraspp_mobilenet_v2
from cvlab.utils import cpu_info

EXPORT_COLUMNS = ["format", "works", "max_abs_diff", "latency_ms", "p90_ms", "size_mb", "export_s", "opset", "error"]
ZOO = ("mobilenet_v3_small", "shufflenet_v2_x1_0", "mobilenet_v2", "efficientnet_b0", "resnet18", "resnet50")


def compact_cnn(train: bool) -> tuple[torch.nn.Module, str]:
    """Lesson 02's checkpoint where it exists (unless ``train``), else 1 epoch on 20,000 images."""
    path = data_root() / "checkpoints" / "02_compact_cnn.pt"
    if path.is_file() and not train:
        model, ckpt = load_model(path)
        return model, f"lesson 02's checkpoint {path.name} ({ckpt['metrics'].get('test_acc', float('nan')):.2f} % test)"
    x, y = fashion_mnist_tensors("train")
    model = CompactCNN()
    start = time.perf_counter()
    cvlab.fit(model, InMemoryLoader(x[:20000], y[:20000], 64, shuffle=True), epochs=1, lr=3e-3, progress=False,
              device="cpu", seed=0)
    return model.eval(), f"trained here: 1 epoch on 20,000 images in {time.perf_counter() - start:.1f} s"


def timed(title: str, fn):
    start = time.perf_counter()
    rows = fn()
    print(f"\n== {title}  [{time.perf_counter() - start:.1f} s]")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per measurement (default 30, after 5 warm-up)")
    parser.add_argument("--train", action="store_true", help="train the CompactCNN here even if lesson 02's checkpoint exists")
    args = parse_args(parser)
    warm = dict(warmup=5, runs=args.runs)

    print(f"CPU: {cpu_info()}; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"quantized engine {torch.backends.quantized.engine}")
    cnn, where = compact_cnn(args.train)
    print(f"CompactCNN: {where}")
    size = LESSON_SCENES["size"]

    rows = timed("export: CompactCNN, 1x1x28x28", lambda: export_report(cnn, torch.rand(1, 1, 28, 28), **warm))
    print(format_table(rows, EXPORT_COLUMNS))
    segmenter = lraspp_mobilenet_v2(11)
    rows = timed(f"export: LRASPP-MobileNetV2, 1x3x{size}x{size}",
                 lambda: export_report(segmenter, torch.rand(1, 3, size, size), **warm))
    print(format_table(rows, EXPORT_COLUMNS))
    detector = fcos_mobilenet_v2(10, size)
    detector.score_thresh = 0.05
    rows = timed(f"export: FCOS-MobileNetV2, one 3x{size}x{size} image",
                 lambda: export_report(detector, [torch.rand(3, size, size)], **warm))
    print(format_table(rows, EXPORT_COLUMNS))
    deprecations = sorted({d for r in rows for d in r["deprecations"].split(" | ") if d})
    print("deprecation warnings seen:", *deprecations, sep="\n  ")

    x, _ = fashion_mnist_tensors("train")
    xt, yt = fashion_mnist_tensors("test")
    rows = timed("int8 quantization: CompactCNN, 500 calibration images, accuracy on 10,000 test images",
                 lambda: quantization_report(cnn, x[-500:], xt, yt, **warm))
    print(format_table(rows, ["method", "works", "accuracy", "latency_ms", "p90_ms", "size_mb", "error"]))
    print("deprecation warnings seen:", *sorted({r["deprecations"] for r in rows if r["deprecations"]}), sep="\n  ")

    models = {"CompactCNN (3x224x224)": CompactCNN(in_channels=3, num_classes=1000, image_size=224),
              "TinyVGG (3x224x224)": TinyVGG(in_channels=3, num_classes=1000, image_size=224), **{n: n for n in ZOO}}
    rows = timed("model choice: batch-1 latency at 3x224x224 (random weights)",
                 lambda: latency_table(models, (3, 224, 224), warmup=3, runs=max(5, args.runs // 3)))
    print(format_table(rows, ["model", "params_m", "gflops", "meta_gflops", "acc1", "latency_ms", "p90_ms"]))


if __name__ == "__main__":
    main()
