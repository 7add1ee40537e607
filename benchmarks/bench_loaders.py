"""Benchmark: the anchors' DataLoader loop, cvlab.fit, and a bare loop — the limit of a Python loop.

Runs, side by side in one process on the same device, for model_0 (LinearModel) and TinyVGG,
3 epochs at batch size 32, the same seed and the same initial weights:

* "anchor": torchvision's FashionMNIST with a per-sample ``ToTensor`` transform in a
  ``DataLoader`` (num_workers=0), Adam, and a hand-written loop as popular courses write it
  (accuracy averaged per batch);
* "fit": ``cvlab.fit`` on ``cvlab.loaders.InMemoryLoader`` (the split held as one uint8 tensor,
  converted a batch at a time), its default fused Adam, its progress bar off;
* "bare": the same model, fused Adam and in-memory loader, and nothing but forward, loss,
  zero_grad, backward and step per batch: no accuracy, no loss bookkeeping, no checks. This is
  the physical limit of a Python training loop on this machine.

Prints training seconds and test accuracy (counted per sample, the same way for all three), and
the ratios fit/bare (target <= 1.2) and anchor/fit (target >= 6 for model_0), beside the CPU
model and the kernels PyTorch uses. This machine's timings are noisy (2-4x in a bad minute): run
it twice and compare. Not a test; it asserts nothing.

Usage:  .venv/bin/python benchmarks/bench_loaders.py [--repeats N] [--models model_0 TinyVGG] [--avx2]
"""
from __future__ import annotations

import argparse
import resource
import time

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms

from _common import parse_args
from cvlab.datasets import fashion_mnist
from cvlab.loaders import fashion_mnist_loaders
from cvlab.models import build_model
from cvlab.training import evaluate, fit
from cvlab.utils import cpu_info, get_device, set_seed

EPOCHS, BATCH_SIZE, LR, SEED = 3, 32, 1e-3, 0


def anchor_loop(model: nn.Module, device: torch.device) -> float:
    """The DataLoader + per-sample ToTensor loop, as the anchor courses write it; returns seconds."""
    train = fashion_mnist("train", transform=transforms.ToTensor())
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
    return time.perf_counter() - t0


def bare_loop(model: nn.Module, device: torch.device) -> float:
    """Forward, loss, zero_grad, backward, step over the in-memory batches, nothing else; seconds."""
    train_loader, _ = fashion_mnist_loaders(BATCH_SIZE, seed=SEED)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
    model.to(device).train()
    t0 = time.perf_counter()
    for _ in range(EPOCHS):
        for x, y in train_loader:
            loss = loss_fn(model(x.to(device)), y.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - t0


def fit_loop(model: nn.Module, device: torch.device) -> float:
    """``cvlab.fit`` on the in-memory loader (no validation, no progress bar); seconds."""
    train_loader, _ = fashion_mnist_loaders(BATCH_SIZE, seed=SEED)
    t0 = time.perf_counter()
    fit(model, train_loader, epochs=EPOCHS, lr=LR, device=device, progress=False)
    return time.perf_counter() - t0


def test_accuracy(model: nn.Module, device: torch.device) -> float:
    _, test_loader = fashion_mnist_loaders(1000)
    return evaluate(model, test_loader, device=device)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=1, help="run each triple this many times")
    parser.add_argument("--models", nargs="+", default=["model_0", "TinyVGG"])
    args = parse_args(parser)
    device = get_device()
    print(f"device {device}; CPU: {cpu_info()}; torch {torch.__version__}")
    print(f"{EPOCHS} epochs, batch {BATCH_SIZE}, Adam lr {LR}, seed {SEED}; seconds of training, test accuracy %\n")
    print(f"{'model':8s} {'run':>3s} | {'anchor s':>8s} {'acc':>6s} | {'fit s':>6s} {'acc':>6s} | {'bare s':>6s} {'acc':>6s}"
          f" | {'fit/bare':>8s} {'anchor/fit':>10s}")
    for arch in args.models:
        for rep in range(1, args.repeats + 1):
            set_seed(SEED)
            init = build_model(arch).state_dict()
            row = {}
            for name, loop in (("anchor", anchor_loop), ("fit", fit_loop), ("bare", bare_loop)):
                model = build_model(arch)
                model.load_state_dict(init)
                seconds = loop(model, device)
                row[name] = (seconds, test_accuracy(model, device))
            (a, a_acc), (f, f_acc), (b, b_acc) = row["anchor"], row["fit"], row["bare"]
            print(f"{arch:8s} {rep:3d} | {a:8.1f} {a_acc:6.2f} | {f:6.1f} {f_acc:6.2f} | {b:6.1f} {b_acc:6.2f}"
                  f" | {f / b:7.2f}x {a / f:9.1f}x", flush=True)
    print("\ntargets for model_0: fit/bare <= 1.2x, anchor/fit >= 6x, equal accuracy within noise")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of this process: {peak_mib:.0f} MiB")


if __name__ == "__main__":  # the guard DataLoader workers need on Windows and macOS
    main()
