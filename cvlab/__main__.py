"""Command line: ``python -m cvlab`` (or the ``cvlab`` console script).

    python -m cvlab setup                      place Fashion-MNIST and the offline ImageNet weights (course.py runs it)
    python -m cvlab train [options]            train a model on Fashion-MNIST or an image folder
    python -m cvlab train --help               every option, explained
    python -m cvlab train-detector [options]   train lesson 06's detector (FCOS-MobileNetV2) on Fashion-MNIST scenes
    python -m cvlab predict CKPT IMAGES...     top-k classes of image files with a checkpoint from train (CSV/JSON)

``train`` is the lessons' training loop as a script, as torchvision's reference
``train.py`` is for theirs: it prints a progress bar per epoch and a final report, writes
``best.pt``, ``last.pt`` and ``history.json`` to a run folder, and resumes from ``last.pt``
with ``--resume`` (``cvlab.train_command``). ``--model mobilenet_v2`` fine-tunes ImageNet weights
(``cvlab.backbones``); ``torchrun --nproc-per-node N -m cvlab train ...`` trains on N processes with
DistributedDataParallel (``cvlab.distributed``).

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

import contextlib
import io
import json
import sys
from pathlib import Path

from .cli import EXIT_BAD_ARGUMENTS, EXIT_FAILED, EXIT_INTERRUPTED, _BadArgument, _output_dir, build_parser, check_detector_args
from .distributed import torchrun_env
from .runs import folder_problem
from .train_command import train_command


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
    quiet = _secondary_rank()  # under torchrun, rank 0 alone reports a bad command line (every rank finds it)
    with contextlib.redirect_stderr(io.StringIO()) if quiet else contextlib.nullcontext():
        args = parser.parse_args(argv)
    command = {"setup": setup_command, "train": train_command, "train-detector": train_detector_command,
               "predict": predict_command}[args.command]
    try:
        return command(args)
    except _BadArgument as exc:
        if quiet:
            return EXIT_BAD_ARGUMENTS
        parser.cvlab_subparsers[args.command].error(str(exc))


def _secondary_rank() -> bool:
    """Whether torchrun started this process as a rank other than 0 (which prints nothing of its own)."""
    try:
        env = torchrun_env()
    except ValueError:  # a broken torchrun environment: train_command reports it
        return False
    return env is not None and env[0] != 0



if __name__ == "__main__":  # the guard DataLoader workers need on Windows and macOS
    sys.exit(main())

