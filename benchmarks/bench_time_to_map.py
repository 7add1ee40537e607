"""Benchmark: seconds of training until a detector reaches mAP@0.5 of 0.5, 0.8 and 0.9 on held-out scenes.

Trains ``cvlab.detection.fcos_mobilenet_v2`` (torchvision's FCOS on the first MobileNetV2 blocks,
ImageNet weights, a 2-conv head) on scenes of real Fashion-MNIST training items
(``cvlab.scenes``: 96 x 96 px, 1-3 items of 24-48 px, exact boxes) with AdamW and a one-cycle
schedule, one epoch at a time, and evaluates COCO mAP (torchmetrics) on scenes of test items
after every epoch. Prints, per epoch, the cumulative training seconds (evaluation excluded),
mAP@0.5 and mAP@[.5:.95], then the seconds at which each threshold was first reached.
Target (issue 11): mAP@0.5 >= 0.90 within 90 s of training on a 2-core CPU.

``--family`` trains another of torchvision's detection classes on the same backbone
(``cvlab.detectors.mobilenet_v2_backbone``), with torchvision's default head for it, for lesson
06's table of what was tried; ``--record FILE`` appends the run's row (family, backbone, input
size, seconds, mAP@0.5, mAP@[.5:.95], CPU) to a JSON-lines file.

This machine's timings are noisy (2-4x in a bad minute): compare runs. Not a test; it asserts nothing.

Usage:  .venv/bin/python benchmarks/bench_time_to_map.py [--train-scenes 3000] [--epochs 6] [--blocks 7]
        [--frozen 4] [--batch-size 16] [--lr 2e-3] [--family fcos|retinanet|fasterrcnn] [--record FILE] [--avx2]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from _common import LESSON_SCENES, parse_args
from cvlab.detection import evaluate, train_one_epoch
from cvlab.detectors import fcos_mobilenet_v2, mobilenet_v2_backbone
from cvlab.scenes import fashion_mnist_scenes, scene_loader
from cvlab.utils import cpu_info, set_seed

THRESHOLDS = (0.5, 0.8, 0.9)


def build(family: str, size: int, blocks: int, frozen: int, channels: int):
    """One of torchvision's detection classes on MobileNetV2 features[:blocks], for 10 classes (labels 1..10)."""
    from torchvision.models.detection import FasterRCNN, RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    if family == "fcos":
        return fcos_mobilenet_v2(10, size, blocks=blocks, frozen_blocks=frozen, head_channels=channels)
    backbone, stride = mobilenet_v2_backbone(size, blocks=blocks, frozen_blocks=frozen, out_channels=channels)
    common = dict(min_size=size, max_size=size, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    anchors = AnchorGenerator(((24, 32, 48),), ((0.5, 1.0, 2.0),))  # the items' sizes (24-48 px) and shapes
    if family == "retinanet":
        return RetinaNet(backbone, 11, anchor_generator=anchors, **common)
    return FasterRCNN(backbone, 11, rpn_anchor_generator=anchors,
                      box_roi_pool=MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2), **common)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-scenes", type=int, default=3000)
    parser.add_argument("--test-scenes", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--blocks", type=int, default=7)
    parser.add_argument("--frozen", type=int, default=4)
    parser.add_argument("--head-channels", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--family", choices=("fcos", "retinanet", "fasterrcnn"), default="fcos")
    parser.add_argument("--record", help="append this run's result row to a JSON-lines file")
    args = parse_args(parser)

    print(f"CPU: {cpu_info()}; torch {torch.__version__}")
    t0 = time.perf_counter()
    train = fashion_mnist_scenes("train", args.train_scenes, seed=args.seed, **LESSON_SCENES)
    test = fashion_mnist_scenes("test", args.test_scenes, seed=args.seed + 1, **LESSON_SCENES)
    print(f"{len(train)} training and {len(test)} test scenes made in {time.perf_counter() - t0:.1f} s")

    set_seed(args.seed)
    model = build(args.family, 96, args.blocks, args.frozen, args.head_channels)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * -(-len(train) // args.batch_size)  # = len(train_loader) per epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps)
    print(f"{type(model).__name__}, MobileNetV2 features[:{args.blocks}] ({args.frozen} frozen), head {args.head_channels} ch: "
          f"{sum(p.numel() for p in trainable):,} trainable parameters; {args.epochs} epochs, batch {args.batch_size}, "
          f"AdamW + one-cycle {args.lr:g}")
    train_loader, test_loader = scene_loader(train, args.batch_size, shuffle=True, seed=args.seed), scene_loader(test, 50)
    reached, seconds = {}, 0.0
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        losses = train_one_epoch(model, train_loader, optimizer, "cpu", scheduler=scheduler,
                                 max_grad_norm=10.0)
        seconds += time.perf_counter() - t0
        result = evaluate(model, test_loader, "cpu", class_metrics=False)
        for th in THRESHOLDS:
            if result["map_50"] >= th and th not in reached:
                reached[th] = seconds
        print(f"  epoch {epoch}: {seconds:6.1f} s of training ({len(train) * epoch / seconds:.0f} scenes/s), "
              f"loss {losses['loss']:.3f}, mAP@0.5 {result['map_50']:.3f}, mAP@[.5:.95] {result['map']:.3f}",
              flush=True)
    for th in THRESHOLDS:
        print(f"mAP@0.5 >= {th}: " + (f"after {reached[th]:.1f} s of training" if th in reached else "not reached"))
    if args.record:
        row = {"family": type(model).__name__, "backbone": f"MobileNetV2 features[:{args.blocks}], {args.frozen} frozen",
               "input_px": 96, "epochs": args.epochs, "train_scenes": len(train), "seconds": round(seconds, 1),
               "map_50": round(result["map_50"], 3), "map": round(result["map"], 3), "cpu": cpu_info()}
        with open(args.record, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
