"""Benchmark: the anchors' DataLoader loop versus cvlab.fit on the in-memory loader.

Runs, side by side in one process on the same device, for model_0 (LinearModel) and TinyVGG,
3 epochs at batch size 32 with Adam (lr 1e-3), the same seed and the same initial weights:

* "anchor loop": torchvision's FashionMNIST with a per-sample ``ToTensor`` transform in a
  ``DataLoader`` (num_workers=0), and a hand-written train/test loop as popular courses write it
  (accuracy averaged per batch);
* "cvlab.fit": the whole split held as one uint8 tensor (``cvlab.data.InMemoryLoader``),
  converted a batch at a time, trained with ``cvlab.training.fit`` (its default, fused Adam);
  for the CNN also with ``channels_last=True``.

Prints training seconds, test accuracy (counted per sample, the same way for both) and the speed
ratio. Target: cvlab.fit at least 5x faster for model_0 at equal accuracy. This machine's timings
are noisy (2-4x in a bad minute): run it twice and compare. Not a test; it asserts nothing.

Usage:  .venv/bin/python benchmarks/bench_loaders.py [--repeats N] [--models model_0 TinyVGG]
"""
from __future__ import annotations

import argparse
import resource
import time

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms

from cvlab.data import data_root, fashion_mnist, fashion_mnist_loaders
from cvlab.models import build_model
from cvlab.training import eval_step, fit
from cvlab.utils import get_device, set_seed

EPOCHS, BATCH_SIZE, LR, SEED = 3, 32, 1e-3, 42


def anchor_loop(model: nn.Module, device: torch.device) -> float:
    """The DataLoader + per-sample ToTensor loop, as the anchor courses write it; returns seconds."""
    to_tensor = transforms.ToTensor()
    train = fashion_mnist("train", transform=to_tensor)
    loader = DataLoader(train, batch_size=BATCH_SIZE, shuffle=True, generator=torch.Generator().manual_seed(SEED))
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    model.to(device)
    t0 = time.perf_counter()
    for _ in range(EPOCHS):
        model.train()
        train_loss, train_acc = 0.0, 0.0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits = model(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            train_loss += loss.item()
            train_acc += (logits.argmax(1) == y).float().mean().item() * 100  # per-batch average
        train_loss /= len(loader)
        train_acc /= len(loader)
    return time.perf_counter() - t0


def test_accuracy(model: nn.Module, device: torch.device) -> float:
    _, test_loader = fashion_mnist_loaders(1000)
    return eval_step(model, test_loader, nn.CrossEntropyLoss(), device)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=1, help="run each pair this many times")
    parser.add_argument("--models", nargs="+", default=["model_0", "TinyVGG"])
    args = parser.parse_args()
    device = get_device()
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}, data in {data_root()}")
    print(f"{EPOCHS} epochs, batch {BATCH_SIZE}, Adam lr {LR}, seed {SEED}\n")
    print(f"{'model':10s} {'run':>3s} {'anchor loop s':>14s} {'acc %':>7s}  {'cvlab.fit':18s} {'s':>6s} {'acc %':>7s} {'speed-up':>9s}")
    for arch in args.models:
        for rep in range(1, args.repeats + 1):
            set_seed(SEED)
            init = build_model(arch).state_dict()
            a = build_model(arch)
            a.load_state_dict(init)
            a_seconds = anchor_loop(a, device)
            a_acc = test_accuracy(a, device)

            variants = [("in-memory", False)] + ([("+ channels_last", True)] if arch != "model_0" else [])
            for label, channels_last in variants:
                b = build_model(arch)
                b.load_state_dict(init)
                train_loader, _ = fashion_mnist_loaders(BATCH_SIZE, seed=SEED)
                t0 = time.perf_counter()
                fit(b, train_loader, epochs=EPOCHS, lr=LR, device=device, progress=False, channels_last=channels_last)
                b_seconds = time.perf_counter() - t0
                b_acc = test_accuracy(b, device)
                print(f"{arch:10s} {rep:3d} {a_seconds:14.1f} {a_acc:7.2f}  {label:18s} {b_seconds:6.1f} {b_acc:7.2f} "
                      f"{a_seconds / b_seconds:8.1f}x", flush=True)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak resident memory of this process: {peak_mib:.0f} MiB")


if __name__ == "__main__":  # the guard DataLoader workers need on Windows and macOS
    main()
