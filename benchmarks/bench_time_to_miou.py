"""Benchmark: seconds of training until a segmentation model reaches mIoU 0.5 / 0.7 / 0.8 on held-out scenes.

Scenes of real Fashion-MNIST items (``cvlab.scenes``: 96 x 96 px, 1-3 items of 24-48 px; training
scenes from the training split, test scenes from the test split), their semantic masks
(``cvlab.segmentation.semantic_mask``: 11 classes, 0 the background), a model trained with AdamW and
a one-cycle schedule, cross-entropy (optionally + Dice), one epoch at a time; mIoU over the 11
classes and pixel accuracy (torchmetrics) on the test scenes after every epoch. Prints, per epoch,
the cumulative training seconds (evaluation excluded), mIoU and pixel accuracy, then the seconds
at which each threshold was first reached and the last epoch's IoU per class.
Target (issue 12): mIoU >= 0.80 within 90 s of training on a 2-core CPU.

This machine's timings are noisy (2-4x in a bad minute): compare runs. Not a test; it asserts nothing.

Usage:  .venv/bin/python benchmarks/bench_time_to_miou.py [--model lraspp|unet] [--epochs 4] [--frozen 4]
        [--train-scenes 3000] [--batch-size 16] [--lr 3e-3] [--refine 8] [--dice] [--record FILE] [--avx2]
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from _common import LESSON_SCENES, parse_args
from cvlab.scenes import SCENE_CLASSES, fashion_mnist_scenes
from cvlab.segmentation import dice_loss, evaluate, segmentation_tensors, train_one_epoch
from cvlab.segmenters import UNet, lraspp_mobilenet_v2
from cvlab.utils import cpu_info, set_seed

THRESHOLDS = (0.5, 0.7, 0.8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("lraspp", "unet"), default="lraspp")
    parser.add_argument("--train-scenes", type=int, default=3000)
    parser.add_argument("--test-scenes", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--frozen", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--refine", type=int, default=0,
                        help="width of the full-resolution refinement (cvlab.segmenters.ImageRefinement); 0: none")
    parser.add_argument("--dice", action="store_true", help="loss = cross-entropy + Dice")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--record", help="append this run's result row to a JSON-lines file (lesson 07 reads "
                                         "benchmarks/results/segmentation_models.jsonl)")
    args = parse_args(parser)

    print(f"CPU: {cpu_info()}; torch {torch.__version__}")
    t0 = time.perf_counter()
    pretrained = args.model == "lraspp"
    train = segmentation_tensors(fashion_mnist_scenes("train", args.train_scenes, seed=args.seed, **LESSON_SCENES),
                                 imagenet_normalize=pretrained)
    test = segmentation_tensors(fashion_mnist_scenes("test", args.test_scenes, seed=args.seed + 1, **LESSON_SCENES),
                                imagenet_normalize=pretrained)
    print(f"{len(train[0])} training and {len(test[0])} test scenes made in {time.perf_counter() - t0:.1f} s; "
          f"background pixels {float((train[1] == 0).float().mean()) * 100:.0f} %")

    set_seed(args.seed)
    model = (lraspp_mobilenet_v2(11, frozen_blocks=args.frozen, refine_channels=args.refine) if pretrained
             else UNet(3, 11, base=16, depth=3))
    trainable = [p for p in model.parameters() if p.requires_grad]
    g = torch.Generator().manual_seed(args.seed)
    train_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*train), batch_size=args.batch_size,
                                               shuffle=True, generator=g)
    test_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*test), batch_size=100)
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.epochs * len(train_loader))
    ce = nn.CrossEntropyLoss()
    loss_fn = (lambda logits, masks: ce(logits, masks) + dice_loss(logits, masks)) if args.dice else ce
    print(f"{args.model}{f' + refinement {args.refine}' if args.refine else ''}: {sum(p.numel() for p in trainable):,} trainable parameters; {args.epochs} epochs, batch "
          f"{args.batch_size}, AdamW + one-cycle {args.lr:g}, loss {'CE + Dice' if args.dice else 'CE'}")
    reached, seconds = {}, 0.0
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        loss = train_one_epoch(model, train_loader, optimizer, loss_fn, "cpu", scheduler=scheduler)
        seconds += time.perf_counter() - t0
        result = evaluate(model, test_loader, 11, "cpu")
        for th in THRESHOLDS:
            if result["miou"] >= th and th not in reached:
                reached[th] = seconds
        print(f"  epoch {epoch}: {seconds:6.1f} s of training ({len(train[0]) * epoch / seconds:.0f} scenes/s), loss "
              f"{loss:.3f}, mIoU {result['miou']:.3f}, pixel accuracy {result['pixel_acc']:.3f}", flush=True)
    for th in THRESHOLDS:
        print(f"mIoU >= {th}: " + (f"after {reached[th]:.1f} s of training" if th in reached else "not reached"))
    print("IoU per class: " + ", ".join(f"{n} {v:.2f}" for n, v in zip(("background", *SCENE_CLASSES[1:]),
                                                                        result["iou_per_class"])))
    if args.record:
        name = ("LRASPP-MobileNetV2" + (f" + refinement {args.refine}" if args.refine else "") if pretrained
                else "U-Net (scratch, base 16)")
        row = {"model": name, "frozen_blocks": args.frozen if pretrained else 0, "loss": "CE + Dice" if args.dice else "CE",
               "epochs": args.epochs, "train_scenes": len(train[0]), "lr": args.lr, "seconds": round(seconds, 1),
               "miou": round(result["miou"], 3), "pixel_acc": round(result["pixel_acc"], 3),
               "seconds_to": {str(th): round(reached[th], 1) for th in THRESHOLDS if th in reached}, "cpu": cpu_info()}
        with open(args.record, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
