"""Command line: ``python -m cvlab`` (or the ``cvlab`` console script).

    python -m cvlab setup                      place Fashion-MNIST and the offline ImageNet weights (course.py runs it)
    python -m cvlab train [options]            train a model on Fashion-MNIST or an image folder
    python -m cvlab train --help               every option, explained
    python -m cvlab train-detector [options]   train lesson 06's detector (FCOS-MobileNetV2) on Fashion-MNIST scenes
    python -m cvlab predict CKPT IMAGES...     top-k classes of image files with a checkpoint from train (CSV/JSON)

``train`` is the lessons' training loop as a script, as torchvision's reference
``train.py`` is for theirs: it prints a progress bar per epoch and a final report, writes
``best.pt``, ``last.pt`` and ``history.json`` to a run folder, and resumes from ``last.pt``
with ``--resume``.

Runs never overwrite each other: without ``--output-dir`` every run gets a fresh folder
``<data root>/runs/<model>-<dataset>-<YYYYmmdd-HHMMSS>``; an ``--output-dir`` that already holds
a run is refused unless ``--overwrite`` (or ``--resume`` from that run's ``last.pt``) is given.

``predict`` exits 1 when some images could not be read (each is named on stderr; the others are
predicted and written).

Exit status: 0 done; 1 the run started and failed (data not set up or corrupt, training
diverged, no epoch finished); 2 a bad command line, found before anything is trained or written
(argparse's convention), with one line naming the option and what to do; 130 interrupted.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .cli import (EXIT_FAILED, EXIT_INTERRUPTED, _BadArgument, _check_batch_size, _check_resume_fits, _check_train_args,
                  _output_dir, build_parser, check_detector_args)
from .runs import dataset_name, folder_problem


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
        try:
            train_ds = datasets.image_folder(args.data_dir / "train", transforms.train_transforms(size, mean, std, args.augment, channels=channels))
            val_ds = datasets.image_folder(args.data_dir / "val", transforms.eval_transforms(size, mean, std, channels=channels))
        except datasets.DatasetNotFoundError as exc:  # the folder the command line names holds no usable images
            raise _BadArgument("--data-dir", " ".join(str(exc).split())) from None
        if train_ds.classes != val_ds.classes:
            raise _BadArgument("--data-dir", f"train/ and val/ hold different classes: {train_ds.classes} vs "
                                             f"{val_ds.classes}; give both the same class folders")
        names, dataset = list(train_ds.classes), dataset_name(args.data_dir)
        if args.train_limit is not None and args.train_limit > len(train_ds):
            raise _BadArgument("--train-limit", f"{args.data_dir / 'train'} has {len(train_ds):,} images, "
                                                f"got {args.train_limit}: use at most {len(train_ds)} (or leave "
                                                "--train-limit out for all of them)")
        _check_batch_size(args, min(len(train_ds), args.train_limit or len(train_ds)))
    if args.train_limit is not None:
        train_ds = torch.utils.data.Subset(train_ds, range(min(args.train_limit, len(train_ds))))
    train_loader = loaders.make_loader(train_ds, args.batch_size, shuffle=True, seed=args.seed,
                                       num_workers=args.num_workers)
    val_loader = loaders.make_loader(val_ds, args.batch_size, num_workers=args.num_workers)
    return train_loader, val_loader, names, {"image_size": size, "channels": channels, "mean": list(mean),
                                             "std": list(std), "dataset": dataset}



def _write_history(out: Path, history, args) -> None:
    """``history.json``: the finished epochs' records, how the run ended, and its arguments."""
    if history is None:
        return
    (out / "history.json").write_text(json.dumps({
        "records": history.records, "interrupted": history.interrupted, "stopped_early": history.stopped_early,
        "diverged": getattr(history, "diverged", False),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}, indent=1))


def train_command(args) -> int:
    """Run ``cvlab train`` on parsed arguments; returns the exit status (see the module docstring).

    Raises:
        _BadArgument: a command-line value that cannot work here (``main`` turns it into exit 2).
    """
    import torch

    from . import models, utils
    from .datasets import CorruptDatasetError, DatasetNotFoundError

    ckpt = _check_train_args(args)
    try:
        train_loader, val_loader, class_names, inputs = _loaders(args)
    except (DatasetNotFoundError, CorruptDatasetError) as exc:
        print(f"cvlab train: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_FAILED
    size, channels = inputs["image_size"], inputs["channels"]
    kwargs = ({"in_features": channels * size * size, "num_classes": len(class_names)}
              if args.model in ("LinearModel", "MLP") else
              {"in_channels": channels, "num_classes": len(class_names), "image_size": size})
    if ckpt is not None:
        _check_resume_fits(ckpt, args.resume, kwargs, class_names)
    utils.set_seed(args.seed)  # before the model is built, so its initial weights repeat
    try:
        model = models.build_model(args.model, **kwargs)
    except ValueError as exc:
        raise _BadArgument("--image-size", f"cannot build {args.model} for {size}x{size} images: {exc}") from None
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
    device = utils.get_device(args.device)  # checked by _check_train_args
    made = ((args.output_dir is None and args.resume is None)  # a fresh run folder
            or (args.output_dir is not None and not args.output_dir.exists()))
    out, verb = _output_dir(args)
    print(f"cvlab train: {verb} {out}", flush=True)
    epochs = f"{args.epochs} epoch{'s' * (args.epochs != 1)}"
    print(f"cvlab train: {args.model} ({models.count_parameters(model):,} parameters) on {inputs['dataset']} "
          f"({len(class_names)} classes, {size}x{size}x{channels}), {epochs} on {device}", flush=True)
    code = _train(args, model, optimizer, scheduler, step, device, train_loader, val_loader, class_names, inputs,
                  kwargs, out)
    if code == EXIT_FAILED and made and not any(out.iterdir()):
        out.rmdir()  # a run folder made by this run, which nothing was written to
    return code



def _train(args, model, optimizer, scheduler, step, device, train_loader, val_loader, class_names, inputs,
           kwargs, out: Path) -> int:
    """fit, then the report; returns the exit status."""
    import torch

    from . import metrics, models, training
    from .checkpoints import CheckpointError

    resume_hint = f"continue it with --resume {out / 'last.pt'}"
    try:
        history = training.fit(
            model, train_loader, val_loader, epochs=args.epochs, optimizer=optimizer, scheduler=scheduler,
            scheduler_step=step, device=device, progress=not args.no_progress, channels_last=args.channels_last,
            amp_dtype=None if args.amp == "none" else args.amp, max_grad_norm=args.max_grad_norm,
            early_stopping_patience=args.patience, monitor="val_loss", checkpoint_dir=out, resume_from=args.resume,
            checkpoint_info={"arch": args.model, "model_kwargs": kwargs, "class_names": class_names,
                             "preprocess": inputs})
    except KeyboardInterrupt as exc:  # fit's TrainingInterrupted carries the finished epochs
        _write_history(out, getattr(exc, "history", None), args)
        print(f"\ncvlab train: interrupted; {out / 'last.pt'} holds the last finished epoch: {resume_hint}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except CheckpointError as exc:
        print(f"cvlab train: cannot resume: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_FAILED
    except (ValueError, FloatingPointError) as exc:
        _write_history(out, getattr(exc, "history", None), args)
        print(f"cvlab train: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_FAILED
    except torch.OutOfMemoryError:
        print(f"cvlab train: out of memory on {device}: use a smaller --batch-size or --image-size", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # disk full, folder removed or made read-only during the run
        try:
            _write_history(out, getattr(exc, "history", None), args)
        except OSError:
            pass
        print(f"cvlab train: cannot write in {out}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    _write_history(out, history, args)
    if not len(history):
        print("cvlab train: no epoch finished; nothing to report", file=sys.stderr)
        return EXIT_FAILED
    best, _ = models.load_model(out / "best.pt", map_location=device)
    probs, y_true = metrics.predict(best, val_loader, device=device)
    y_pred = probs.argmax(1)
    best_rec = history.best("val_loss", mode="min")
    print(f"\nbest epoch {best_rec['epoch']}: val loss {best_rec['val_loss']:.4f}, val accuracy "
          f"{metrics.accuracy(y_true, y_pred):.2f} %; training time {history.total_seconds:.1f} s")
    print(metrics.classification_report(y_true, y_pred, class_names))
    print(f"saved {out / 'best.pt'}, {out / 'last.pt'} and {out / 'history.json'}")
    return 0



def train_detector_command(args) -> int:
    """Run ``cvlab train-detector``: lesson 06's recipe (FCOS-MobileNetV2, AdamW one-cycle, scenes of
    Fashion-MNIST items); COCO mAP on the test scenes after every epoch, ``last.pt`` every epoch,
    ``best.pt`` at the best mAP@0.5, ``history.json``. Returns the exit status.

    Raises:
        _BadArgument: a command-line value that cannot work here (``main`` turns it into exit 2).
    """
    import time

    import torch

    from . import utils
    from .checkpoints import save_checkpoint
    from .datasets import CorruptDatasetError, DatasetNotFoundError
    from .detection import evaluate, train_one_epoch
    from .detectors import fcos_mobilenet_v2
    from .scenes import SCENE_CLASSES, fashion_mnist_scenes, scene_loader

    check_detector_args(args)
    size = args.image_size
    scene = dict(size=size, max_items=3, scale=(size // 4, size // 2))
    try:
        train = fashion_mnist_scenes("train", args.train_scenes, seed=args.seed, min_items=1, **scene)
        test = fashion_mnist_scenes("test", args.test_scenes, seed=args.seed + 1, min_items=0, **scene)
    except (DatasetNotFoundError, CorruptDatasetError) as exc:
        print(f"cvlab train-detector: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_FAILED
    utils.set_seed(args.seed)
    kwargs = {"num_classes": 10, "image_size": size, "frozen_blocks": args.frozen_blocks}
    model = fcos_mobilenet_v2(**kwargs)
    train_loader, test_loader = scene_loader(train, args.batch_size, shuffle=True, seed=args.seed), scene_loader(test, 50)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=args.epochs * len(train_loader))
    device = utils.get_device(args.device)
    out, verb = _output_dir(args, "fcos_mobilenet_v2", "scenes")
    print(f"cvlab train-detector: {verb} {out}\ncvlab train-detector: {len(train):,} training and {len(test):,} test "
          f"scenes of {size}x{size} px, {args.epochs} epoch(s) on {device}", flush=True)
    records, ended, t0 = [], "finished", time.perf_counter()
    info = dict(arch="fcos_mobilenet_v2", model_kwargs=kwargs, class_names=list(SCENE_CLASSES))
    try:
        for epoch in range(1, args.epochs + 1):
            losses = train_one_epoch(model, train_loader, optimizer, device, scheduler=scheduler, max_grad_norm=10.0,
                                     num_classes=10, progress=not args.no_progress)
            result = evaluate(model, test_loader, device, class_metrics=False)
            records.append({"epoch": epoch, **losses, **result, "seconds": round(time.perf_counter() - t0, 1)})
            save_checkpoint(out / "last.pt", model, metrics=result, epoch=epoch, **info)
            if result["map_50"] >= max(r["map_50"] for r in records):
                save_checkpoint(out / "best.pt", model, metrics=result, epoch=epoch, **info)
            print(f"epoch {epoch}: loss {losses['loss']:.3f}, mAP@0.5 {result['map_50']:.3f}, "
                  f"mAP@[.5:.95] {result['map']:.3f} ({records[-1]['seconds']:.0f} s)", flush=True)
    except KeyboardInterrupt:
        ended = "interrupted"
    except FloatingPointError as exc:
        ended = f"diverged: {exc}"
    (out / "history.json").write_text(json.dumps({"records": records, "ended": ended, "args": {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}, indent=1))
    if ended == "interrupted":
        print(f"\ncvlab train-detector: interrupted after {len(records)} epoch(s); history.json and best.pt keep "
              "them", file=sys.stderr)
        return EXIT_INTERRUPTED
    if ended != "finished":
        print(f"cvlab train-detector: {ended}", file=sys.stderr)
        return EXIT_FAILED
    best = max(records, key=lambda r: r["map_50"])
    print(f"best epoch {best['epoch']}: mAP@0.5 {best['map_50']:.3f}, mAP@[.5:.95] {best['map']:.3f}\n"
          f"saved {out / 'best.pt'}, {out / 'last.pt'} and {out / 'history.json'}")
    return 0


def setup_command(args) -> int:
    """Run ``cvlab setup``; returns the exit status."""
    from .datasets import CorruptDatasetError, DatasetNotFoundError
    from .pretrained import PretrainedWeightsError
    from .provisioning import setup

    if args.root is not None:
        problem = folder_problem(args.root)
        if problem:
            raise _BadArgument("--root", problem)
    try:
        setup(args.root, allow_download=not args.no_download)
    except (DatasetNotFoundError, CorruptDatasetError, PretrainedWeightsError) as exc:
        note = (" (--no-download: nothing was downloaded or installed; run without --no-download to allow it)"
                if args.no_download else "")
        print(f"cvlab setup: {' '.join(str(exc).split())}{note}", file=sys.stderr)
        return EXIT_FAILED
    return 0



def predict_command(args) -> int:
    """Run ``cvlab predict``: exit 0 when every image was predicted, 1 when some could not be read
    (named on stderr), 2 for a bad command line (missing checkpoint or images, an --output that
    exists without --overwrite)."""
    from .checkpoints import CheckpointError
    from .inference import image_files, predict_files, write_predictions
    from .models import load_model

    if args.top_k < 1 or args.batch_size < 1:
        raise _BadArgument("--top-k" if args.top_k < 1 else "--batch-size", "must be a whole number >= 1")
    if args.output is not None and args.output.exists() and not args.overwrite:
        raise _BadArgument("--output", f"{args.output} exists: choose another name or add --overwrite")
    path = args.checkpoint / "best.pt" if args.checkpoint.is_dir() else args.checkpoint
    try:
        model, ckpt = load_model(path)
        paths = image_files(args.images)
        rows, bad = predict_files(model, ckpt, paths, k=args.top_k, batch_size=args.batch_size, device=args.device,
                                  progress=not args.no_progress)
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        raise _BadArgument("checkpoint" if isinstance(exc, CheckpointError) else "images",
                           " ".join(str(exc).split())) from None
    text = write_predictions(rows, args.output)
    if args.output is None:
        sys.stdout.write(text)
    for bad_path, reason in bad:
        print(f"cvlab predict: skipped {bad_path}: {reason}", file=sys.stderr)
    where = f" to {args.output}" if args.output is not None else ""
    print(f"cvlab predict: {len(rows)} image(s) predicted{where}, {len(bad)} skipped", file=sys.stderr)
    return EXIT_FAILED if bad else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m cvlab`` and the ``cvlab`` console script; returns an exit status.

    A bad command line raises ``SystemExit(2)`` after one ``error:`` line (argparse's way), also
    for the checks made after parsing (paths, devices, the output folder, the --resume file).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    command = {"setup": setup_command, "train": train_command, "train-detector": train_detector_command,
               "predict": predict_command}[args.command]
    try:
        return command(args)
    except _BadArgument as exc:
        parser.cvlab_subparsers[args.command].error(str(exc))



if __name__ == "__main__":  # the guard DataLoader workers need on Windows and macOS
    sys.exit(main())

