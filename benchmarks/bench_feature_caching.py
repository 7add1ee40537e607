"""Benchmark: fine-tuning the last blocks of MobileNetV2 with and without feature caching.

Lesson 05 fine-tunes blocks 16-18 and a new head of torchvision's pretrained MobileNetV2 on
Fashion-MNIST resized to 96x96 px, with blocks 0-15 frozen. Two ways to train, side by side in one
process, from the same weights, on the same batches (same seed), for the same epochs:

* "no caching": every step runs the whole network on the images; the frozen blocks run in eval
  mode without gradients, but they run every epoch;
* "cached": ``cvlab.transfer.extract_features`` runs the frozen blocks once over all images (its
  time is counted), then every step runs only blocks 16-18 and the head on the cached outputs.

Prints seconds (caching included), the speed ratio, and the largest difference between the two
runs' trained weights (they compute the same thing; only floating-point rounding differs). This
machine's timings are noisy (2-4x in a bad minute): it runs each way ``--repeats`` times. Not a
test; it asserts nothing.

Usage:  .venv/bin/python benchmarks/bench_feature_caching.py [--images 1000] [--epochs 10] [--repeats 2] [--avx2]
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn

from _common import parse_args
from cvlab.datasets import fashion_mnist_tensors
from cvlab.loaders import InMemoryLoader
from cvlab.pretrained import pretrained
from cvlab.transfer import extract_features, freeze, param_groups, replace_head
from cvlab.training import fit
from cvlab.transforms import pretrained_transforms
from cvlab.utils import cpu_info, set_seed

CUT, SIZE, SEED = 16, 96, 42


class FrozenPrefix(nn.Module):
    """The whole MobileNetV2 with blocks 0-CUT-1 kept in eval mode and out of autograd."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        with torch.no_grad():
            self.model.features[:CUT].eval()
            mid = self.model.features[:CUT](x)
        return self.model.classifier(nn.functional.adaptive_avg_pool2d(self.model.features[CUT:](mid), 1).flatten(1))


def make(base: nn.Module) -> nn.Module:
    m = copy.deepcopy(base)
    replace_head(m, 10)
    freeze(m.features[:CUT])
    return m


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="training images (default 1000)")
    parser.add_argument("--epochs", type=int, default=10, help="default 10, as lesson 05")
    parser.add_argument("--repeats", type=int, default=2)
    args = parse_args(parser)

    base, weights = pretrained("mobilenet_v2", verbose=False)
    base = base.to(memory_format=torch.channels_last)
    preprocess = pretrained_transforms(weights, crop_size=SIZE, resize_size=SIZE)
    images, labels = fashion_mnist_tensors("train")
    images, labels = images[:args.images], labels[:args.images]
    x = torch.cat([preprocess(chunk) for chunk in images.split(500)])      # preprocessing is not timed
    print(f"CPU: {cpu_info()}; torch {torch.__version__}")
    print(f"{args.images} Fashion-MNIST images at {SIZE}x{SIZE} px, {args.epochs} epochs, batch 32, "
          f"{torch.get_num_threads()} CPU threads; fine-tuning blocks {CUT}-18 + head of MobileNetV2 ({weights.name})")

    for repeat in range(1, args.repeats + 1):
        set_seed(SEED)
        plain = make(base)
        net = FrozenPrefix(plain)
        opt = torch.optim.AdamW(param_groups(plain, {"features": 1e-4, "classifier": 1e-3}))
        start = time.perf_counter()
        fit(net, InMemoryLoader(x, labels, 32, shuffle=True, seed=SEED), epochs=args.epochs, optimizer=opt,
            progress=False, device="cpu")
        t_plain = time.perf_counter() - start

        set_seed(SEED)
        cached = make(base)
        start = time.perf_counter()
        mid, y = extract_features(cached.features[:CUT], InMemoryLoader(x, labels, 250), progress=False, device="cpu")
        t_extract = time.perf_counter() - start
        tail = nn.Sequential(cached.features[CUT:], nn.AdaptiveAvgPool2d(1), nn.Flatten(), cached.classifier)
        opt = torch.optim.AdamW(param_groups(cached, {"features": 1e-4, "classifier": 1e-3}))
        fit(tail, InMemoryLoader(mid, y, 32, shuffle=True, seed=SEED), epochs=args.epochs, optimizer=opt,
            progress=False, device="cpu")
        t_cached = time.perf_counter() - start

        diff = max(float((a - b).abs().max()) for a, b in zip(plain.state_dict().values(), cached.state_dict().values())
                   if a.is_floating_point())
        moved = float((cached.features[17].conv[0][0].weight - base.features[17].conv[0][0].weight).detach().abs().max())
        print(f"run {repeat}: no caching {t_plain:6.1f} s | cached {t_cached:6.1f} s (of which caching {t_extract:.1f} s) "
              f"| {t_plain / t_cached:4.1f}x faster | largest weight difference between the two {diff:.1e} "
              f"(block 17 moved up to {moved:.1e} from the pretrained weights)")


if __name__ == "__main__":
    main()
