"""``python -m cvlab train``: the training script, on one process or on several started by torchrun.

It reads the data (Fashion-MNIST or an image folder), builds the model (one of the course's architectures
from scratch, or a pretrained backbone: ``cvlab.backbones``), the optimizer and the learning-rate schedule,
trains with ``cvlab.training.fit`` and prints a report; ``cvlab.cli`` has checked the command line first.

Under torchrun (``torchrun --nproc-per-node 2 -m cvlab train ...``: RANK, WORLD_SIZE, LOCAL_RANK set,
WORLD_SIZE > 1) every process trains a ``DistributedDataParallel`` copy of the model on its share of each
batch (``cvlab.distributed``): ``--batch-size`` is the batch of the whole run, split evenly over the
processes, so one command line trains the same way on one process or on several. Rank 0 alone prints and
writes the run folder; the other ranks stay quiet unless they fail. A rank that fails says so ("cvlab train:
rank R of N failed: ...") and exits 1, and torchrun then stops the others; a rank that hangs is given up
after ``--dist-timeout`` seconds.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from pathlib import Path

from . import backbones, distributed
from .cli import EXIT_FAILED, EXIT_INTERRUPTED, _BadArgument, _check_batch_size, _check_train_args, _output_dir
from .runs import dataset_name

__all__ = ["train_command"]


#: words in PyTorch's errors when another rank stopped answering (gloo: "Connection reset by peer",
#: "Application timeout caused pair closure"; nccl: "Watchdog caught collective operation timeout")
LOST_RANK = ("timed out", "timeout", "connection reset", "connection closed", "broken pipe")


def _say(text: str, verb: str = "") -> None:
    """One line on stderr, "cvlab train: ...", naming this process's rank when there are several."""
    env = distributed.torchrun_env()
    who = f"rank {env[0]} of {env[1]}{verb}: " if env and env[1] > 1 else (f"{verb.strip()}: " if verb else "")
    print(f"cvlab train: {who}{' '.join(text.split())}", file=sys.stderr)


def train_command(args) -> int:
    """Run ``cvlab train`` on parsed arguments; returns the exit status (see ``cvlab.__main__``).

    On several processes, a rank other than 0 prints nothing on stdout; an unexpected error on any rank is
    printed with its traceback and the line "cvlab train: rank R of N failed: ..." (exit 1), and the process
    group is left in every case.

    Raises:
        _BadArgument: a command-line value that cannot work here (``main`` turns it into exit 2).
    """
    try:
        env = distributed.torchrun_env()
    except ValueError as exc:
        raise _BadArgument("torchrun environment", str(exc)) from None
    if env is None or env[1] == 1:
        return _run(args, 1)
    quiet = open(os.devnull, "w") if env[0] != 0 else None
    try:
        with contextlib.redirect_stdout(quiet) if quiet else contextlib.nullcontext():
            return _run(args, env[1])
    except _BadArgument:  # every rank finds it, rank 0 says it (main)
        raise
    except Exception as exc:
        traceback.print_exc()
        reason = f"{type(exc).__name__}: {exc}"
        if any(words in reason.lower() for words in LOST_RANK):
            reason += (f" -- lost another rank (it stopped, or did not answer within --dist-timeout "
                       f"{args.dist_timeout:g} s): it failed (its message is above) or hangs")
        _say(f"{reason[:1000]}. The run stops: torchrun ends the other ranks.", " failed")
        return EXIT_FAILED
    finally:
        distributed.cleanup()
        if quiet:
            quiet.close()


def _run(args, world: int) -> int:
    """Check, load, build, train; ``world`` processes (1: no process group)."""
    from . import models
    from .datasets import CorruptDatasetError, DatasetNotFoundError
    from .pretrained import PretrainedWeightsError

    ckpt = _check(args, world)
    try:
        backbone = backbones.load_backbone(args.model) if args.model in backbones.PRETRAINED_MODELS else None
    except PretrainedWeightsError as exc:
        _say(str(exc))
        return EXIT_FAILED
    try:
        device = distributed.init_distributed(args.device, timeout=args.dist_timeout)
    except ValueError as exc:
        raise _BadArgument("--device", str(exc)) from None
    try:
        train_loader, val_loader, class_names, inputs = _loaders(
            args, backbone and backbones.weights_preprocess(backbone[1]))
    except (DatasetNotFoundError, CorruptDatasetError) as exc:
        _say(str(exc))
        return EXIT_FAILED
    info = _checkpoint_info(args, class_names, inputs, backbone)
    if ckpt is not None:
        _check_resume_fits(ckpt, args.resume, info)
    model, schedule, optimizer, (scheduler, step), factor = _build(args, info, backbone)
    model = _place(args, model, device, schedule)
    shard = val_loader
    if world > 1:
        train_loader, shard = _shard(args, train_loader, val_loader)
    main = distributed.is_main_process()
    made = main and ((args.output_dir is None and args.resume is None)  # a fresh run folder
                     or (args.output_dir is not None and not args.output_dir.exists()))
    out, verb = distributed.broadcast_object(_output_dir(args) if main else None)
    print(f"cvlab train: {verb} {out}", flush=True)
    epochs = f"{args.epochs} epoch{'s' * (args.epochs != 1)}"
    where = f"{world} processes ({args.batch_size // world} images each per step) on {device.type}" if world > 1 \
        else device
    extra = f", ImageNet weights {backbone[1].name}, {schedule.describe(factor)}" if backbone else ""
    size, channels = inputs["image_size"], inputs["channels"]
    print(f"cvlab train: {args.model} ({models.count_parameters(model):,} parameters{extra}) on {inputs['dataset']} "
          f"({len(class_names)} classes, {size}x{size}x{channels}), {epochs} on {where}", flush=True)
    code = EXIT_FAILED
    try:
        code = _train(args, model, optimizer, scheduler, step, device, train_loader, (shard, val_loader), class_names,
                      info, out, schedule, main, world)
    finally:
        if code == EXIT_FAILED and made and not any(out.iterdir()):
            out.rmdir()  # a run folder made by this run, which nothing was written to
    return code


def _check(args, world: int) -> dict | None:
    """Every check that needs no data: ``cvlab.cli``'s, the pretrained backbone's options, the batch split
    over ``world`` processes; returns the --resume checkpoint. Raises ``_BadArgument``."""
    ckpt = _check_train_args(args)
    problem = backbones.backbone_args_problem(args)
    if problem:
        raise _BadArgument(*problem)
    if args.batch_size % world:
        raise _BadArgument("--batch-size", f"{args.batch_size} images per step cannot be split evenly over {world} "
                                           f"processes: use a multiple of {world}, e.g. "
                                           f"{max(world, args.batch_size - args.batch_size % world)}")
    return ckpt


def _checkpoint_info(args, class_names: list[str], inputs: dict, backbone) -> dict:
    """What the checkpoints record to rebuild the model: ``arch``, ``model_kwargs``, ``class_names``,
    ``preprocess`` and, for a pretrained backbone, ``backbone`` (``cvlab.backbones.backbone_info``)."""
    size, channels, n = inputs["image_size"], inputs["channels"], len(class_names)
    if backbone:
        kwargs = {"num_classes": n}
    elif args.model in ("LinearModel", "MLP"):
        kwargs = {"in_features": channels * size * size, "num_classes": n}
    else:
        kwargs = {"in_channels": channels, "num_classes": n, "image_size": size}
    info = {"arch": args.model, "model_kwargs": kwargs, "class_names": class_names, "preprocess": inputs}
    if backbone:
        info["backbone"] = backbones.backbone_info(args, backbone[1])
    return info


def _build(args, info: dict, backbone):
    """(model, backbone schedule or None, optimizer, (scheduler factory, its step), backbone lr factor).

    The model's initial weights follow --seed; a pretrained model's optimizer holds the head at --lr and
    the backbone at --lr x factor, both from the start (a frozen backbone gets no gradient, so no step)."""
    import torch

    from . import models, utils

    utils.set_seed(args.seed)  # before the model is built, so its initial weights repeat
    kwargs, size = info["model_kwargs"], info["preprocess"]["image_size"]
    try:
        model = backbones.new_head(backbone[0], args.model, kwargs["num_classes"]) if backbone else \
            models.build_model(args.model, **kwargs)
    except ValueError as exc:
        raise _BadArgument("--image-size", f"cannot build {args.model} for {size}x{size} images: {exc}") from None
    schedule = backbones.BackboneSchedule(model, args.model, freeze=args.freeze_backbone,
                                          unfreeze_at=args.unfreeze_at) if backbone else None
    factor = backbones.BACKBONE_LR_FACTOR if args.backbone_lr_factor is None else args.backbone_lr_factor
    params = backbones.backbone_param_groups(model, args.model, args.lr, factor) if backbone else model.parameters()
    optimizer = {"sgd": lambda: torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=args.weight_decay),
                 "adam": lambda: torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay),
                 "adamw": lambda: torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay),
                 }[args.optimizer]()
    return model, schedule, optimizer, _scheduler(args, [g["lr"] for g in optimizer.param_groups]), factor


def _place(args, model, device, schedule):
    """The model on its device and memory format, wrapped in DistributedDataParallel on several processes
    (``cvlab.distributed.wrap_model``). A backbone frozen for the whole run is frozen first, so DDP leaves
    its weights out; one unfrozen later is wrapped trainable, with ``find_unused_parameters``."""
    import torch

    from . import utils

    staged = schedule is not None and schedule.unfreeze_at is not None
    if schedule is not None and not staged:
        schedule(1)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    model = distributed.wrap_model(model, device, find_unused_parameters=staged)
    if distributed.is_distributed():
        utils.set_seed((args.seed + distributed.rank()) % 2**32)  # each rank its own dropout and augmentation
    return model


def _scheduler(args, peaks: list[float]):
    """(scheduler factory ``(optimizer, total_steps) -> scheduler`` or None, "batch" or "epoch"); ``peaks``:
    each parameter group's peak learning rate (head and backbone differ for a pretrained model)."""
    import torch

    sched = torch.optim.lr_scheduler
    max_lr = peaks if len(peaks) > 1 else args.lr
    # factories: fit passes the number of steps it will take
    return {
        "onecycle": (lambda opt, n: sched.OneCycleLR(opt, max_lr, total_steps=n), "batch"),
        "cosine": (lambda opt, n: sched.CosineAnnealingLR(opt, T_max=n), "epoch"),
        "step": (lambda opt, n: sched.StepLR(opt, step_size=max(1, n // 3), gamma=0.1), "epoch"),
        "plateau": (lambda opt, n: sched.ReduceLROnPlateau(opt, factor=0.3, patience=1), "epoch"),
        "none": (None, "batch"),
    }[args.scheduler]


def _loaders(args, pre: dict | None = None):
    """(train_loader, val_loader, class_names, model input description) for the chosen data; ``pre``: what
    a pretrained model's weights want (``cvlab.backbones.weights_preprocess``), or None."""
    import torch

    from . import datasets, loaders, transforms

    if args.data_dir is None:
        size, channels = args.image_size or (pre["image_size"] if pre else 28), args.channels or (3 if pre else 1)
        if args.augment == "none" and size == 28 and channels == 1:
            train_loader, val_loader = loaders.fashion_mnist_loaders(args.batch_size, seed=args.seed,
                                                                     train_limit=args.train_limit)
            return train_loader, val_loader, list(datasets.FASHION_MNIST_CLASSES), {
                "image_size": 28, "channels": 1, "mean": [0.0], "std": [1.0], "dataset": "fashion-mnist"}
        if pre:
            mean, std = pre["mean"], pre["std"]
        else:
            mean, std = (transforms.FASHION_MNIST_MEAN * channels)[:channels], (transforms.FASHION_MNIST_STD * channels)[:channels]
        train_ds = datasets.fashion_mnist("train", transform=transforms.train_transforms(size, mean, std, args.augment, channels=channels))
        val_ds = datasets.fashion_mnist("test", transform=transforms.eval_transforms(size, mean, std, channels=channels))
        names, dataset = list(datasets.FASHION_MNIST_CLASSES), "fashion-mnist"
    else:
        size, channels = args.image_size or (pre["image_size"] if pre else 64), args.channels or 3
        if pre:
            mean, std = pre["mean"], pre["std"]
        elif channels == 3:
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


def _shard(args, train_loader, val_loader):
    """This rank's loaders: its share of every training batch (``train_sampler``: --batch-size / processes
    images, reshuffled per epoch) and of the validation images (``eval_indices``, none repeated)."""
    from .loaders import InMemoryLoader, make_loader

    per_rank, rank = args.batch_size // distributed.world_size(), distributed.rank()
    n_train, n_val = len(train_loader.dataset), len(val_loader.dataset)
    sampler = distributed.train_sampler(n_train, seed=args.seed)
    if isinstance(train_loader, InMemoryLoader):
        return (InMemoryLoader(train_loader.images, train_loader.labels, per_rank, sampler=sampler),
                InMemoryLoader(val_loader.images, val_loader.labels, per_rank, sampler=distributed.eval_indices(n_val)))
    return (make_loader(train_loader.dataset, per_rank, sampler=sampler, seed=args.seed + rank,
                        num_workers=args.num_workers),
            make_loader(val_loader.dataset, per_rank, sampler=distributed.eval_indices(n_val),
                        num_workers=args.num_workers))


def _check_resume_fits(ckpt: dict, path: Path, info: dict) -> None:
    """A --resume checkpoint was made for the model, inputs and classes this command line builds, and with
    the same backbone learning rate (the freezing options may change: e.g. unfreeze a frozen run)."""
    saved, kwargs = ckpt.get("model_kwargs") or {}, info["model_kwargs"]
    differ = [f"{k}={saved.get(k)!r} there, {v!r} now" for k, v in kwargs.items() if saved.get(k) != v]
    pre, now = ckpt.get("preprocess") or {}, info["preprocess"]
    differ += [f"{k}={pre[k]!r} there, {now[k]!r} now" for k in ("image_size", "channels")
               if k not in kwargs and k in pre and pre[k] != now[k]]
    if differ:
        raise _BadArgument("--resume", f"{path} was trained with other options ({'; '.join(differ)}): "
                                       "pass the --image-size, --channels and data of that run, or start a new run")
    if ckpt.get("class_names") not in (None, info["class_names"]):
        raise _BadArgument("--resume", f"{path} was trained on the classes {ckpt['class_names']}, but this "
                                       f"data has {info['class_names']}: pass that run's --data-dir, or start a new "
                                       "run")
    factor = (ckpt.get("backbone") or {}).get("backbone_lr_factor")
    now_factor = (info.get("backbone") or {}).get("backbone_lr_factor")
    if None not in (factor, now_factor) and factor != now_factor:
        raise _BadArgument("--backbone-lr-factor", f"{path} was trained with --backbone-lr-factor {factor:g}, not "
                                                   f"{now_factor:g} (resuming keeps the saved learning rates): pass "
                                                   f"--backbone-lr-factor {factor:g}, or start a new run")


def _write_history(out: Path, history, args) -> None:
    """``history.json``: the finished epochs' records, how the run ended, and its arguments."""
    if history is None:
        return
    (out / "history.json").write_text(json.dumps({
        "records": history.records, "interrupted": history.interrupted, "stopped_early": history.stopped_early,
        "diverged": getattr(history, "diverged", False), "processes": distributed.world_size(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}, indent=1))


def _train(args, model, optimizer, scheduler, step, device, train_loader, val_loaders, class_names, info,
           out: Path, schedule, main: bool, world: int) -> int:
    """fit, then (rank 0) history.json and the report; returns the exit status. ``val_loaders``: (this
    rank's share, the whole validation set)."""
    import torch

    from . import metrics, models, training
    from .checkpoints import CheckpointError

    resume_hint = f"continue it with --resume {out / 'last.pt'}"
    keep = (lambda h: _write_history(out, h, args)) if main else (lambda h: None)
    try:
        history = training.fit(
            model, train_loader, val_loaders[0], epochs=args.epochs, optimizer=optimizer, scheduler=scheduler,
            scheduler_step=step, device=device, progress=not args.no_progress, channels_last=args.channels_last,
            amp_dtype=None if args.amp == "none" else args.amp, max_grad_norm=args.max_grad_norm,
            early_stopping_patience=args.patience, monitor="val_loss", checkpoint_dir=out, resume_from=args.resume,
            checkpoint_info=info, on_epoch_start=schedule)
    except KeyboardInterrupt as exc:  # fit's TrainingInterrupted carries the finished epochs
        keep(getattr(exc, "history", None))
        if main:
            print(f"\ncvlab train: interrupted; {out / 'last.pt'} holds the last finished epoch: {resume_hint}",
                  file=sys.stderr)
        return EXIT_INTERRUPTED
    except CheckpointError as exc:
        _say(f"cannot resume: {exc}")
        return EXIT_FAILED
    except (ValueError, FloatingPointError) as exc:
        keep(getattr(exc, "history", None))
        _say(str(exc))
        return EXIT_FAILED
    except torch.OutOfMemoryError:
        _say(f"out of memory on {device}: use a smaller --batch-size or --image-size")
        return EXIT_FAILED
    except OSError as exc:  # disk full, folder removed or made read-only during the run
        try:
            keep(getattr(exc, "history", None))
        except OSError:
            pass
        _say(f"cannot write in {out}: {exc}")
        return EXIT_FAILED
    except RuntimeError:  # on several processes: another rank failed or hangs; keep the epochs last.pt holds
        if main and world > 1 and (out / "last.pt").is_file():
            from .checkpoints import load_checkpoint
            from .history import History
            keep(History(load_checkpoint(out / "last.pt").get("history")))
        raise
    keep(history)
    if not main:
        return 0
    if not len(history):
        _say("no epoch finished; nothing to report")
        return EXIT_FAILED
    best, _ = models.load_model(out / "best.pt", map_location=device)
    probs, y_true = metrics.predict(best, val_loaders[1], device=device)
    y_pred = probs.argmax(1)
    best_rec = history.best("val_loss", mode="min")
    print(f"\nbest epoch {best_rec['epoch']}: val loss {best_rec['val_loss']:.4f}, val accuracy "
          f"{metrics.accuracy(y_true, y_pred):.2f} %; training time {history.total_seconds:.1f} s")
    print(metrics.classification_report(y_true, y_pred, class_names))
    print(f"saved {out / 'best.pt'}, {out / 'last.pt'} and {out / 'history.json'}")
    return 0
