"""The command line's arguments: the parser of ``python -m cvlab``, every check of an option
(exit status 2 with one line naming the option and the fix), and the run folders.

``cvlab/__main__.py`` runs the commands; this module only decides whether a command line is
valid and where a run writes.
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from .backbones import PRETRAINED_MODELS, add_backbone_options
from .distributed import add_distributed_options
from .inference import add_predict_parser
from .runs import RUN_FILES, dataset_name, folder_problem, new_run_dir, same_folder
from .utils import DEFAULT_SEED

MODEL_CHOICES = ("LinearModel", "MLP", "TinyVGG", "CompactCNN", *PRETRAINED_MODELS)

#: the smallest image side (pixels) each architecture can take: TinyVGG halves it twice, CompactCNN three times,
#: MobileNetV2 five times (32 px: a 1x1 map)
MIN_IMAGE_SIZE = {"LinearModel": 1, "MLP": 1, "TinyVGG": 4, "CompactCNN": 8, "mobilenet_v2": 32}

FASHION_MNIST_TRAIN_SIZE = 60_000


# Upper limits: far above anything useful, low enough to catch a typo (an extra zero, a missing minus sign)

MAX_EPOCHS, MAX_IMAGE_SIZE, MAX_WEIGHT_DECAY, MAX_NUM_WORKERS, MAX_GRAD_NORM, MAX_SCENES = 10_000, 1024, 1.0, 64, 1e6, 100_000

#: the smallest scene side train-detector takes, pixels
MIN_SCENE_SIZE = 64

EXIT_FAILED, EXIT_BAD_ARGUMENTS, EXIT_INTERRUPTED = 1, 2, 130

DETECTOR_EPILOG = """\
writes:
  best.pt (the epoch with the best mAP@0.5), last.pt and history.json (per epoch: the mean of each
  loss, mAP@[.5:.95], mAP@0.5, mAP@0.75, seconds) to a fresh run folder, printed first.

exit status: 0 done, 1 the run failed (Fashion-MNIST not set up, the loss diverged),
  2 a bad command line (one line names the option), 130 interrupted (history.json keeps the
  finished epochs, best.pt the best of them)
"""

TRAIN_EPILOG = f"""\
runs:
  Without --output-dir every run writes to a fresh folder, printed first:
  <data root>/runs/<model>-<dataset>-<date>-<time> (-2, -3 ... appended if it exists).
  An --output-dir that already holds best.pt, last.pt or history.json is refused, unless you pass
  --overwrite (which deletes them first) or --resume <that folder>/last.pt. --resume without
  --output-dir continues in the checkpoint's own folder: best.pt is then only replaced by a better epoch.

several processes:
  torchrun --nproc-per-node 2 -m cvlab train ... trains with DistributedDataParallel (gloo on the CPU, nccl
  on CUDA): --batch-size is split over the processes, rank 0 alone prints and writes the run folder; a rank
  that fails ends the whole run (exit 1, and torchrun names the rank), one that hangs after --dist-timeout s.

exit status:
  0    done
  1    the run started and failed: Fashion-MNIST not set up or corrupt (python course.py setup),
       an unreadable image, training diverged (NaN or infinite loss), no epoch finished
  2    a bad command line, found before anything is trained or written; one line names the option
       and what to do: a number that is not finite or out of range (--lr > 0, --epochs
       1..{MAX_EPOCHS}, --image-size up to {MAX_IMAGE_SIZE}, --batch-size and --train-limit up to the training
       set's size ...), a --device this machine does not have, an --output-dir that is a file, not
       writable or holds another run, a --data-dir without train/ and val/ class folders of images,
       a --resume file that is missing, empty, not a training checkpoint (last.pt), of another
       model or made with other options
  130  interrupted (Ctrl-C): last.pt holds the last finished epoch; continue with --resume
"""


def _number(kind, *, low: float, high: float | None = None, low_ok: bool = False, hint: str = ""):
    """An argparse type: a finite ``kind`` (int or float) above ``low`` (or equal, with low_ok) and <= high."""
    what = "a whole number" if kind is int else "a number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}{hint}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}{hint}")
        too_low = value < low or (value == low and not low_ok)
        if too_low or (high is not None and value > high):
            show = (lambda v: str(int(v))) if kind is int else (lambda v: f"{v:g}")
            bounds = f"{'>=' if low_ok else '>'} {show(low)}" + (f" and <= {show(high)}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}{hint}")
        return value
    return parse


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option that has one; the description and epilog printed as written."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m cvlab`` (``setup`` and ``train``)."""
    parser = argparse.ArgumentParser(prog="cvlab", description="cvlab course tools",
                                     epilog="exit status: 0 done, 1 the command started and failed, 2 a bad "
                                            "command line (one line says which option and what to do)")
    sub = parser.add_subparsers(dest="command", required=True)
    p_setup = sub.add_parser("setup", help="place Fashion-MNIST and the offline ImageNet weights, checked by sha256",
                             usage="cvlab setup [--root FOLDER] [--no-download]")
    p_setup.add_argument("--root", type=Path, help="data root (default: $CVLAB_DATA or the project's data/)")
    p_setup.add_argument("--no-download", action="store_true",
                         help="no network and no package install: only files already on this machine")

    t = sub.add_parser("train", help="train a classifier on Fashion-MNIST or an image folder",
                       formatter_class=_Formatter, epilog=TRAIN_EPILOG,
                       usage="cvlab train [options]   (python -m cvlab train --help lists them)",
                       description="Train an image classifier and save its best checkpoint. Data: Fashion-MNIST\n"
                                   "(default) or --data-dir with train/ and val/ folders of <class>/<image> files.")
    d = t.add_argument_group("data")
    d.add_argument("--data-dir", type=Path, help="a folder with train/ and val/, each holding one sub-folder "
                   "per class (ImageFolder layout); without it, Fashion-MNIST")
    d.add_argument("--image-size", type=_number(int, low=0, high=MAX_IMAGE_SIZE, hint=" (pixels; e.g. 28 or 64)"),
                   help="height = width in pixels the images are resized to (default: 28 for Fashion-MNIST, 64 for "
                        f"an image folder, the weights' 224 for a pretrained --model; at most {MAX_IMAGE_SIZE})")
    d.add_argument("--channels", type=int, choices=(1, 3), help="1 = grayscale, 3 = RGB (default: 1 for "
                   "Fashion-MNIST, 3 for an image folder)")
    d.add_argument("--augment", default="none", choices=("none", "flip", "basic", "trivialaugment", "randaugment",
                                                          "autoaugment"),
                   help="training augmentation preset (cvlab.transforms.train_transforms); with 'none', "
                        "Fashion-MNIST trains from memory, much faster")
    d.add_argument("--num-workers", type=_number(int, low=0, low_ok=True, high=MAX_NUM_WORKERS,
                                                 hint=" (0 loads in the main process)"), default=0,
                   help=f"DataLoader worker processes (0 = load in the main process; at most {MAX_NUM_WORKERS})")
    d.add_argument("--train-limit", type=_number(int, low=0, hint=" (leave it out to use every training image)"),
                   help="use only this many training images (quick runs); at most the training set's size")
    m = t.add_argument_group("model and optimisation")
    m.add_argument("--model", default="CompactCNN", choices=MODEL_CHOICES, help="architecture (cvlab.models); "
                   "mobilenet_v2: ImageNet weights, new head (cvlab.backbones)")
    m.add_argument("--epochs", type=_number(int, low=0, high=MAX_EPOCHS, hint=" (e.g. 3)"), default=3,
                   help=f"number of epochs (a resumed run continues up to this number; at most {MAX_EPOCHS})")
    m.add_argument("--batch-size", type=_number(int, low=0, hint=" (e.g. 128)"), default=128,
                   help="images per batch (at most the number of training images); under torchrun split evenly "
                        "over the processes")
    m.add_argument("--lr", type=_number(float, low=0, hint=" (e.g. 1e-2 for AdamW, 1e-1 for SGD)"),
                   default=1e-2, help="(peak) learning rate, > 0; one far too large stops the run with a "
                                      "divergence message (exit 1)")
    m.add_argument("--optimizer", default="adamw", choices=("adamw", "adam", "sgd"),
                   help="AdamW, Adam, or SGD with momentum 0.9")
    m.add_argument("--weight-decay", type=_number(float, low=0, low_ok=True, high=MAX_WEIGHT_DECAY,
                                                  hint=" (e.g. 0.01; 0 for none)"), default=0.01,
                   help=f"weight decay, in [0, {MAX_WEIGHT_DECAY:g}]")
    m.add_argument("--scheduler", default="onecycle", choices=("onecycle", "cosine", "step", "plateau", "none"),
                   help="learning-rate schedule: one-cycle (per batch), cosine or step (per epoch), "
                        "reduce-on-plateau (per epoch, on val loss), or constant")
    m.add_argument("--max-grad-norm", type=_number(float, low=0, high=MAX_GRAD_NORM,
                                                   hint=" (e.g. 1.0; leave it out for no clipping)"),
                   help="clip gradients to this global L2 norm")
    m.add_argument("--amp", default="none", choices=("none", "bfloat16", "float16"),
                   help="mixed precision with torch.autocast (float16 needs CUDA)")
    m.add_argument("--channels-last", action="store_true", help="channels_last memory format (faster CNNs on CPU)")
    add_backbone_options(m)
    m.add_argument("--patience", type=_number(int, low=0, high=MAX_EPOCHS, hint=" (e.g. 3)"),
                   help="early stopping: epochs without val-loss improvement")
    r = t.add_argument_group("run")
    r.add_argument("--output-dir", type=Path, help="where best.pt, last.pt and history.json go (default: a fresh "
                   "<data root>/runs/<model>-<dataset>-<date>-<time>; with --resume, the checkpoint's folder)")
    r.add_argument("--overwrite", action="store_true",
                   help="let --output-dir replace the run already in it (its best.pt, last.pt, history.json are deleted)")
    r.add_argument("--resume", type=Path, help="continue from this last.pt (or a run folder holding one), "
                   "with the same data and options")
    r.add_argument("--seed", type=_number(int, low=0, low_ok=True, high=2**32 - 1), default=DEFAULT_SEED,
                   help="random seed")
    r.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: $CVLAB_DEVICE, else the best available)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_distributed_options(r)
    parser.cvlab_subparsers = {"setup": p_setup, "train": t, "train-detector": _detector_parser(sub),
                               "predict": add_predict_parser(sub)}
    return parser


def _detector_parser(sub) -> argparse.ArgumentParser:
    """``train-detector``: lesson 06's FCOS-MobileNetV2 on Fashion-MNIST scenes, as a script."""
    d = sub.add_parser("train-detector", formatter_class=_Formatter, epilog=DETECTOR_EPILOG,
                       help="train lesson 06's detector (FCOS on MobileNetV2) on scenes of Fashion-MNIST items",
                       usage="cvlab train-detector [options]   (python -m cvlab train-detector --help lists them)",
                       description="Train torchvision's FCOS on MobileNetV2 (cvlab.detectors.fcos_mobilenet_v2) on "
                                   "scenes of\nFashion-MNIST items (cvlab.scenes), evaluate COCO mAP on test "
                                   "scenes every epoch,\nsave the best checkpoint by mAP@0.5.")
    d.add_argument("--train-scenes", type=_number(int, low=0, high=MAX_SCENES), default=3000,
                   help=f"training scenes, made from Fashion-MNIST's training items (at most {MAX_SCENES:,})")
    d.add_argument("--test-scenes", type=_number(int, low=0, high=MAX_SCENES), default=500,
                   help="test scenes, made from its test items; about a quarter of them empty")
    d.add_argument("--image-size", type=_number(int, low=0, high=MAX_IMAGE_SIZE), default=96,
                   help=f"scene side in pixels, at least {MIN_SCENE_SIZE}; items take a quarter to half of it")
    d.add_argument("--epochs", type=_number(int, low=0, high=MAX_EPOCHS), default=4, help="number of epochs")
    d.add_argument("--batch-size", type=_number(int, low=0), default=16,
                   help="scenes per batch (at most --train-scenes)")
    d.add_argument("--lr", type=_number(float, low=0, hint=" (e.g. 2e-3)"), default=2e-3,
                   help="peak learning rate of AdamW's one-cycle schedule")
    d.add_argument("--frozen-blocks", type=_number(int, low=0, low_ok=True, high=7), default=4,
                   help="MobileNetV2 blocks kept fixed, 0..7")
    d.add_argument("--output-dir", type=Path, help="where best.pt, last.pt and history.json go (default: a fresh "
                   "<data root>/runs/fcos_mobilenet_v2-scenes-<date>-<time>)")
    d.add_argument("--overwrite", action="store_true", help="let --output-dir replace the run already in it")
    d.add_argument("--seed", type=_number(int, low=0, low_ok=True, high=2**32 - 1), default=DEFAULT_SEED)
    d.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: $CVLAB_DEVICE, else the best available)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.set_defaults(resume=None)  # the run-folder checks shared with train read it
    return d


def check_detector_args(args) -> None:
    """Every check of ``train-detector``'s arguments; raises ``_BadArgument`` (exit status 2)."""
    if args.device is not None:
        _check_device(args.device, "--device")
    if args.image_size < MIN_SCENE_SIZE:
        raise _BadArgument("--image-size", f"scenes need at least {MIN_SCENE_SIZE} pixels (MobileNetV2's stride 8 and "
                                           f"items of at least 16 px), got {args.image_size}")
    if args.batch_size > args.train_scenes:
        raise _BadArgument("--batch-size", f"{args.batch_size} is larger than --train-scenes {args.train_scenes}: "
                                           "use a smaller batch or more scenes")
    if args.output_dir is not None:
        _check_output_dir(args)


class _BadArgument(Exception):
    """A command-line value that cannot work here: ``str(exc)`` is the one-line message."""

    def __init__(self, option: str, message: str):
        super().__init__(f"argument {option}: {message}")


def _available_devices() -> list[str]:
    import torch

    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        names.append("mps")
    return names


def _check_device(text: str, option: str) -> str:
    """``text`` if this machine has that device; else _BadArgument listing the ones it has."""
    import torch

    here = _available_devices()
    fix = f"this machine has: {', '.join(here)} (leave --device out to pick the best)"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise _BadArgument(option, f"{text!r} is not a device name; use cpu, cuda, cuda:N or mps; {fix}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise _BadArgument(option, f"{text!r} asked for, but CUDA is not available here; {fix}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise _BadArgument(option, f"{text!r} asked for, but this machine has {torch.cuda.device_count()} "
                                       f"CUDA device(s); {fix}")
    elif device.type == "mps":
        if "mps" not in here:
            raise _BadArgument(option, f"{text!r} asked for, but Apple MPS is not available here; {fix}")
    elif device.type != "cpu":
        raise _BadArgument(option, f"{text!r}: cvlab trains on cpu, cuda or mps; {fix}")
    return text


def _check_data_dir(path: Path) -> None:
    if not path.exists():
        raise _BadArgument("--data-dir", f"no folder {path}: give a folder holding train/<class>/<images> "
                                         "and val/<class>/<images> (or leave --data-dir out for Fashion-MNIST)")
    if not path.is_dir():
        raise _BadArgument("--data-dir", f"{path} is a file, not a folder: give a folder holding "
                                         "train/<class>/<images> and val/<class>/<images>")
    for split in ("train", "val"):
        if not (path / split).is_dir():
            raise _BadArgument("--data-dir", f"{path} has no {split}/ folder: --data-dir needs "
                                             f"{path / 'train'}/<class>/<images> and "
                                             f"{path / 'val'}/<class>/<images>")


def _read_resume(path: Path, model: str) -> tuple[Path, dict]:
    """The training checkpoint ``--resume`` names (a file, or a run folder with last.pt) and its content."""
    from .checkpoints import CheckpointError, load_checkpoint

    if path.is_dir():
        if not (path / "last.pt").is_file():
            raise _BadArgument("--resume", f"{path} is a folder without last.pt: give the last.pt of an "
                                           "earlier run (python -m cvlab train writes it in its run folder)")
        path = path / "last.pt"
    if not path.exists():
        raise _BadArgument("--resume", f"no file {path}: give the last.pt of an earlier run "
                                       "(its folder is printed when the run starts), or leave --resume out")
    if path.stat().st_size == 0:
        raise _BadArgument("--resume", f"{path} is empty (0 bytes; a save that never finished?): resume "
                                       "from another last.pt or start a new run without --resume")
    try:
        ckpt = load_checkpoint(path, map_location="cpu")
    except CheckpointError as exc:
        raise _BadArgument("--resume", " ".join(str(exc).split())) from None
    if "optimizer" not in ckpt or "epoch" not in ckpt:
        raise _BadArgument("--resume", f"{path} holds weights only, not a training state: resume from "
                                       f"the last.pt next to it ({path.with_name('last.pt')})")
    if ckpt["arch"] != model:
        raise _BadArgument("--resume", f"{path} is a checkpoint of {ckpt['arch']}, not of {model}: "
                                       f"pass --model {ckpt['arch']}, or resume from a {model} run's last.pt")
    return path, ckpt


def _check_output_dir(args) -> None:
    """--output-dir (when given) can be written and holds no other run (unless --overwrite or --resume from it)."""
    out = args.output_dir
    problem = folder_problem(out)
    if problem:
        raise _BadArgument("--output-dir", problem)
    held = [n for n in RUN_FILES if (out / n).exists()]
    resuming_here = args.resume is not None and same_folder(args.resume.parent, out)
    if resuming_here and args.overwrite:
        raise _BadArgument("--overwrite", f"it would delete {args.resume}, which --resume continues from: "
                                          "drop --overwrite to continue that run, or --resume to replace it")
    if held and not args.overwrite and not resuming_here:
        raise _BadArgument("--output-dir", f"{out} already holds {', '.join(held)} of an earlier run: pass "
                                           "--overwrite to replace it, pick another folder (or leave --output-dir "
                                           f"out for a fresh one), or --resume {out / 'last.pt'} to continue it")


def _check_train_args(args) -> dict | None:
    """Every check of ``train``'s arguments that needs no data loaded; returns the --resume checkpoint."""
    if args.device is not None:
        _check_device(args.device, "--device")
    elif os.environ.get("CVLAB_DEVICE"):
        _check_device(os.environ["CVLAB_DEVICE"], "--device (from $CVLAB_DEVICE)")
    if args.image_size is not None and args.image_size < MIN_IMAGE_SIZE[args.model]:
        raise _BadArgument("--image-size", f"{args.model} needs images of at least {MIN_IMAGE_SIZE[args.model]} "
                                           f"pixels (each pooling halves them), got {args.image_size}: use a "
                                           "larger --image-size or another --model")
    if args.data_dir is not None:
        _check_data_dir(args.data_dir)
    else:
        n = FASHION_MNIST_TRAIN_SIZE
        if args.train_limit is not None and args.train_limit > n:
            raise _BadArgument("--train-limit", f"Fashion-MNIST has {n:,} training images, got {args.train_limit}: "
                                                f"use at most {n} (or leave --train-limit out for all of them)")
        _check_batch_size(args, min(n, args.train_limit or n))
    ckpt = None
    if args.resume is not None:
        args.resume, ckpt = _read_resume(args.resume, args.model)
        if ckpt["epoch"] >= args.epochs:
            raise _BadArgument("--epochs", f"{args.resume} has already finished {ckpt['epoch']} epoch(s), "
                                           f"so --epochs {args.epochs} leaves nothing to do: ask for more, e.g. "
                                           f"--epochs {ckpt['epoch'] + 1}")
    if args.output_dir is not None:
        _check_output_dir(args)
    elif args.resume is not None:
        problem = folder_problem(args.resume.parent)
        if problem:
            raise _BadArgument("--resume", f"cannot continue the run in its folder: {problem}")
    else:
        from .datasets import data_root
        runs = data_root() / "runs"
        problem = folder_problem(runs)
        if problem:
            raise _BadArgument("--output-dir", f"the default run folder {runs} cannot be used: {problem}; "
                                               "or pass --output-dir")
    return ckpt


def _check_batch_size(args, train_size: int) -> None:
    if args.batch_size > train_size:
        limited = f" after --train-limit {args.train_limit}" if args.train_limit is not None else ""
        raise _BadArgument("--batch-size", f"{args.batch_size} is larger than the training set ({train_size:,} "
                                           f"images{limited}): use at most {train_size}")


def _output_dir(args, model: str | None = None, dataset: str | None = None) -> tuple[Path, str]:
    """The folder this run writes to, made if needed, and how to describe it (a fresh run folder is
    named after ``model`` and ``dataset``, by default ``--model`` and ``--data-dir``)."""
    from .datasets import data_root

    if args.output_dir is not None:
        out = args.output_dir
        held = [n for n in RUN_FILES if (out / n).exists()]
        out.mkdir(parents=True, exist_ok=True)
        if args.resume is not None and same_folder(args.resume.parent, out):
            return out, "continuing the run in"
        if held and args.overwrite:
            for n in held:
                (out / n).unlink()
            return out, f"--overwrite: deleted the earlier run's {', '.join(held)}; writing to"
        return out, "writing to"
    if args.resume is not None:
        return args.resume.parent, "continuing the run in"
    return new_run_dir(data_root() / "runs", model or args.model, dataset or dataset_name(args.data_dir)), "writing to"
