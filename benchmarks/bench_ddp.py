"""Benchmark: ``cvlab train`` on one process and on two (``torchrun --nproc-per-node 2``): seconds and test accuracy.

Runs the same command line both ways, each as its own command into a temporary folder: CompactCNN on the first
4,000 Fashion-MNIST training images, 2 epochs, batches of 128 (64 per process on two; the same steps and
learning rates either way), validated on the 10,000 test images after each epoch. Prints, per run, the
wall-clock seconds of the whole command (Python and torch start-up, data loading, the final report included),
the training seconds ``cvlab train`` reports (fit's epochs with their validation) and the final test accuracy,
with the CPU model (``cvlab.utils.cpu_info``). Not a test; it asserts nothing.

What to expect on a 2-core CPU: no speed-up. One process already uses both cores for its convolutions
(PyTorch's intra-op threads); two processes get one core each (torchrun sets OMP_NUM_THREADS=1) and
average their gradients over gloo after every step, and each pays torch's start-up. DDP pays off where each
process has a GPU of its own (nccl), or on many cores with models whose steps do not scale over threads.
The accuracy is the same within noise (different shuffles and BatchNorm batches of 64 instead of 128).

Usage:  .venv/bin/python benchmarks/bench_ddp.py [--train-limit 4000] [--epochs 2] [--model CompactCNN] [--avx2]
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import parse_args
from cvlab.utils import cpu_info


def run(prefix: list[str], args, out: Path) -> dict:
    """One ``cvlab train`` command; its wall-clock seconds, reported training seconds and test accuracy (%)."""
    command = [*prefix, "train", "--model", args.model, "--train-limit", str(args.train_limit), "--epochs",
               str(args.epochs), "--batch-size", str(args.batch_size), "--device", "cpu", "--no-progress",
               "--output-dir", str(out)]
    t0 = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    found = re.search(r"val accuracy ([\d.]+) %; training time ([\d.]+) s", result.stdout)
    return {"wall": wall, "train": float(found.group(2)), "acc": float(found.group(1))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="CompactCNN", choices=("CompactCNN", "TinyVGG"))
    parser.add_argument("--train-limit", type=int, default=4000, help="training images")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128, help="the whole step's batch (split over processes)")
    args = parse_args(parser)
    print(f"CPU: {cpu_info()}")
    print(f"{args.model}, {args.train_limit:,} Fashion-MNIST training images, {args.epochs} epochs, batch "
          f"{args.batch_size}, validated on the 10,000 test images", flush=True)
    python = [sys.executable]
    runs = {"1 process": python + ["-m", "cvlab"],
            "2 processes (torchrun, gloo)": python + ["-m", "torch.distributed.run", "--standalone",
                                                      "--nproc-per-node", "2", "-m", "cvlab"]}
    with tempfile.TemporaryDirectory() as tmp:
        results = {name: run(prefix, args, Path(tmp) / f"run{i}") for i, (name, prefix) in enumerate(runs.items())}
    print(f"\n{'':30} {'wall clock':>11} {'training':>9} {'test accuracy':>14}")
    for name, r in results.items():
        print(f"{name:30} {r['wall']:9.1f} s {r['train']:7.1f} s {r['acc']:12.2f} %")
    one, two = results.values()
    print(f"\n2 processes train in {two['train'] / one['train']:.2f}x the time of 1 (below 1 would be a speed-up); "
          f"test accuracy {two['acc'] - one['acc']:+.2f} points")


if __name__ == "__main__":
    main()
