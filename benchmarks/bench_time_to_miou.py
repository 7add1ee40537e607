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
        [--train-scenes 3000] [--batch-size 16] [--lr 3e-3] [--dice] [--avx2]
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from cvlab.scenes import SCENE_CLASSES, fashion_mnist_scenes
from cvlab.segmentation import UNet, dice_loss, evaluate, lraspp_mobilenet_v2, semantic_mask, train_one_epoch
from cvlab.utils import cpu_info, rerun_with_avx2_kernels, set_seed

THRESHOLDS = (0.5, 0.7, 0.8)
MEAN, STD = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def tensors(scenes, normalize: bool):
    """Images float32 (N, 3, H, W) (ImageNet-normalised for a pretrained backbone) and masks int64 (N, H, W)."""
    images = torch.stack([img.as_subclass(torch.Tensor) for img, _ in scenes]).float().div(255).expand(-1, 3, -1, -1)
    images = (images - MEAN) / STD if normalize else images.contiguous()
    masks = torch.stack([semantic_mask(t, img.shape[-2:]) for img, t in scenes])
    return images, masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("lraspp", "unet"), default="lraspp")
    parser.add_argument("--train-scenes", type=int, default=3000)
    parser.add_argument("--test-scenes", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--frozen", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--dice", action="store_true", help="loss = cross-entropy + Dice")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--avx2", action="store_true",
                        help="time as on a CPU without AVX-512: PyTorch restricted to AVX2 kernels (cvlab.utils.AVX2_ENV)")
    args = parser.parse_args()
    if args.avx2:
        rerun_with_avx2_kernels()

    print(f"CPU: {cpu_info()}; torch {torch.__version__}")
    scene = dict(size=96, min_items=1, max_items=3, scale=(24, 48))
    t0 = time.perf_counter()
    train = tensors(fashion_mnist_scenes("train", args.train_scenes, seed=args.seed, **scene), args.model == "lraspp")
    test = tensors(fashion_mnist_scenes("test", args.test_scenes, seed=args.seed + 1, **scene), args.model == "lraspp")
    print(f"{len(train[0])} training and {len(test[0])} test scenes made in {time.perf_counter() - t0:.1f} s; "
          f"background pixels {float((train[1] == 0).float().mean()) * 100:.0f} %")

    set_seed(args.seed)
    model = lraspp_mobilenet_v2(11, frozen_blocks=args.frozen) if args.model == "lraspp" else UNet(3, 11, base=16, depth=3)
    trainable = [p for p in model.parameters() if p.requires_grad]
    g = torch.Generator().manual_seed(args.seed)
    train_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*train), batch_size=args.batch_size,
                                               shuffle=True, generator=g)
    test_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*test), batch_size=100)
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.epochs * len(train_loader))
    ce = nn.CrossEntropyLoss()
    loss_fn = (lambda logits, masks: ce(logits, masks) + dice_loss(logits, masks)) if args.dice else ce
    print(f"{args.model}: {sum(p.numel() for p in trainable):,} trainable parameters; {args.epochs} epochs, batch "
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


if __name__ == "__main__":
    main()
