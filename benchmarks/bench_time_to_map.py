"""Benchmark: seconds of training until a detector reaches mAP@0.5 of 0.5, 0.8 and 0.9 on held-out scenes.

Trains ``cvlab.detection.fcos_mobilenet_v2`` (torchvision's FCOS on the first MobileNetV2 blocks,
ImageNet weights, a 2-conv head) on scenes of real Fashion-MNIST training items
(``cvlab.scenes``: 96 x 96 px, 1-3 items of 24-48 px, exact boxes) with AdamW and a one-cycle
schedule, one epoch at a time, and evaluates COCO mAP (torchmetrics) on scenes of test items
after every epoch. Prints, per epoch, the cumulative training seconds (evaluation excluded),
mAP@0.5 and mAP@[.5:.95], then the seconds at which each threshold was first reached.
Target (issue 11): mAP@0.5 >= 0.90 within 90 s of training on a 2-core CPU.

This machine's timings are noisy (2-4x in a bad minute): compare runs. Not a test; it asserts nothing.

Usage:  .venv/bin/python benchmarks/bench_time_to_map.py [--train-scenes 3000] [--epochs 6] [--blocks 7]
        [--frozen 4] [--batch-size 16] [--lr 2e-3] [--avx2]
"""
from __future__ import annotations

import argparse
import time

import torch

from cvlab.detection import evaluate, fcos_mobilenet_v2, train_one_epoch
from cvlab.scenes import collate_detection, fashion_mnist_scenes
from cvlab.utils import cpu_info, rerun_with_avx2_kernels, set_seed

THRESHOLDS = (0.5, 0.8, 0.9)


def batches(scenes, batch_size: int, generator: torch.Generator | None = None):
    """(images, targets) batches: grayscale scenes as float32 RGB in [0, 1]; shuffled with a generator."""
    order = torch.randperm(len(scenes), generator=generator) if generator is not None else torch.arange(len(scenes))
    for idx in order.split(batch_size):
        chunk = [scenes[i] for i in idx.tolist()]
        yield collate_detection([(img.expand(3, -1, -1).float() / 255,
                                  {"boxes": t["boxes"], "labels": t["labels"]}) for img, t in chunk])


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
    parser.add_argument("--avx2", action="store_true",
                        help="time as on a CPU without AVX-512: PyTorch restricted to AVX2 kernels (cvlab.utils.AVX2_ENV)")
    args = parser.parse_args()
    if args.avx2:
        rerun_with_avx2_kernels()

    print(f"CPU: {cpu_info()}; torch {torch.__version__}")
    scene = dict(size=96, min_items=1, max_items=3, scale=(24, 48))
    t0 = time.perf_counter()
    train = fashion_mnist_scenes("train", args.train_scenes, seed=args.seed, **scene)
    test = fashion_mnist_scenes("test", args.test_scenes, seed=args.seed + 1, **scene)
    print(f"{len(train)} training and {len(test)} test scenes made in {time.perf_counter() - t0:.1f} s")

    set_seed(args.seed)
    model = fcos_mobilenet_v2(10, 96, blocks=args.blocks, frozen_blocks=args.frozen, head_channels=args.head_channels)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * -(-len(train) // args.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps)
    print(f"FCOS, MobileNetV2 features[:{args.blocks}] ({args.frozen} frozen), head {args.head_channels} ch: "
          f"{sum(p.numel() for p in trainable):,} trainable parameters; {args.epochs} epochs, batch {args.batch_size}, "
          f"AdamW + one-cycle {args.lr:g}")
    g = torch.Generator().manual_seed(args.seed)
    reached, seconds = {}, 0.0
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        losses = train_one_epoch(model, batches(train, args.batch_size, g), optimizer, "cpu", scheduler=scheduler,
                                 max_grad_norm=10.0)
        seconds += time.perf_counter() - t0
        result = evaluate(model, batches(test, 50), "cpu", class_metrics=False)
        for th in THRESHOLDS:
            if result["map_50"] >= th and th not in reached:
                reached[th] = seconds
        print(f"  epoch {epoch}: {seconds:6.1f} s of training ({len(train) * epoch / seconds:.0f} scenes/s), "
              f"loss {losses['loss']:.3f}, mAP@0.5 {result['map_50']:.3f}, mAP@[.5:.95] {result['map']:.3f}",
              flush=True)
    for th in THRESHOLDS:
        print(f"mAP@0.5 >= {th}: " + (f"after {reached[th]:.1f} s of training" if th in reached else "not reached"))


if __name__ == "__main__":
    main()
