"""Pretrained backbones for ``python -m cvlab train --model mobilenet_v2``: ImageNet weights with a new head,
the preprocessing the weights want, a frozen backbone, and staged unfreezing at a lower learning rate.

Lesson 05's transfer learning, for the command line, made of ``cvlab.transfer``'s parts:

* the model is torchvision's MobileNetV2 with the offline ImageNet weights (``cvlab.pretrained``), its last
  ``nn.Linear`` replaced by a fresh one for the data's classes (``replace_head``) and its ``features`` held in
  a ``FrozenPrefix`` (frozen blocks get no gradient and keep their BatchNorm statistics);
* images are resized to the weights' crop size (224 px; ``--image-size`` for smaller, faster inputs),
  given 3 channels (grayscale repeated) and normalised with the weights' ImageNet mean and std;
* ``--freeze-backbone`` trains the new head only; ``--unfreeze-at EPOCH`` starts that way and lets the
  backbone join from that epoch on; whenever the backbone trains, it does so at ``--lr`` x
  ``--backbone-lr-factor`` (0.1), a parameter group of its own (``param_groups``; Howard and Ruder 2018,
  arXiv:1801.06146), while the head trains at ``--lr``.

The checkpoint stores the architecture name and ``num_classes`` (so ``cvlab.models.load_model`` rebuilds it
without downloading anything), the preprocessing (so ``python -m cvlab predict`` prepares images as in
training) and these choices (``backbone_info``). ``--resume`` keeps the saved learning rates, so it refuses
another ``--backbone-lr-factor``; the freezing may change: a run trained with ``--freeze-backbone`` can be
resumed without it (or with a later ``--unfreeze-at``) to fine-tune the backbone from the next epoch on.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from .models import TORCHVISION_MODELS
from .pretrained import pretrained
from .transfer import FrozenPrefix, param_groups, replace_head

__all__ = ["BACKBONE_LR_FACTOR", "BackboneSchedule", "PRETRAINED_MODELS", "add_backbone_options",
           "backbone_args_problem", "backbone_info", "backbone_param_groups", "load_backbone", "new_head",
           "weights_preprocess"]

#: the architectures ``cvlab train`` fine-tunes from ImageNet weights
PRETRAINED_MODELS = TORCHVISION_MODELS

#: the backbone's learning rate is the head's times this, unless --backbone-lr-factor says otherwise
BACKBONE_LR_FACTOR = 0.1

#: architecture -> (its backbone module, its head module), as in ``model.named_modules()``
PARTS = {"mobilenet_v2": ("features", "classifier")}


def load_backbone(name: str) -> tuple[nn.Module, Any]:
    """torchvision's ``name`` with its offline ImageNet weights, still with ImageNet's 1000-class head.

    Args:
        name: one of ``PRETRAINED_MODELS`` ("mobilenet_v2").

    Returns:
        ``(model, weights)``: the model and the weights enum member used (the best cached ones, e.g.
        IMAGENET1K_V1; its ``transforms()`` and ``meta``). Nothing is downloaded.

    Raises:
        ValueError: a name not in ``PRETRAINED_MODELS``.
        cvlab.pretrained.PretrainedWeightsError: no weights cached (``python course.py setup`` places them) or
            a corrupt cached file.
    """
    if name not in PARTS:
        raise ValueError(f"no pretrained backbone {name!r} for cvlab train; choose one of {list(PARTS)}")
    return pretrained(name, allow_download=False, verbose=False)


def new_head(model: nn.Module, name: str, num_classes: int) -> nn.Module:
    """Make a ``load_backbone`` model a classifier for ``num_classes``, in place.

    Its last ``nn.Linear`` is replaced by a fresh one (``replace_head``, initialised from torch's random
    state) and its backbone (``model.features``) is held in a ``FrozenPrefix`` with no block frozen yet, so
    ``BackboneSchedule`` can freeze and unfreeze it; the ``state_dict`` keys stay torchvision's.

    Returns:
        the model: input float32 (B, 3, H, W) normalised with the weights' mean and std, output logits
        float32 (B, num_classes).
    """
    replace_head(model, num_classes)
    backbone, _ = PARTS[name]
    setattr(model, backbone, FrozenPrefix(getattr(model, backbone), 0))
    return model


def weights_preprocess(weights) -> dict[str, Any]:
    """What the weights want of an image: ``{"image_size": crop size in pixels, "mean": [3 floats],
    "std": [3 floats]}``, read from ``weights.transforms()`` (torchvision's ``ImageClassification``)."""
    t = weights.transforms()
    return {"image_size": int(t.crop_size[0]), "mean": [float(m) for m in t.mean], "std": [float(s) for s in t.std]}


def backbone_param_groups(model: nn.Module, name: str, lr: float, factor: float = BACKBONE_LR_FACTOR) -> list[dict]:
    """The optimizer's parameter groups: the head at ``lr`` first, then the backbone at ``lr * factor``.

    Call it while every parameter is trainable (before freezing): the optimizer then holds the backbone
    from the start, and a frozen backbone (no gradients) is simply left alone by it until it is unfrozen.

    Returns:
        ``cvlab.transfer.param_groups``' list of ``{"params", "lr", "name"}`` dicts.
    """
    backbone, head = PARTS[name]
    return param_groups(model, {head: lr, backbone: lr * factor})


class BackboneSchedule:
    """When the backbone trains: a callable ``schedule(epoch)`` for ``fit(on_epoch_start=...)``.

    Args:
        model: a model made by ``new_head`` (not a DDP wrapper: its ``.module``).
        name: its architecture name.
        freeze: keep the backbone frozen (only the head trains) ...
        unfreeze_at: ... until this epoch (1-based), from which on it trains too; None: for the whole run.
            Without ``freeze`` and ``unfreeze_at`` the whole model trains from the first epoch.
    """

    def __init__(self, model: nn.Module, name: str, *, freeze: bool = False, unfreeze_at: int | None = None):
        self.backbone: FrozenPrefix = getattr(model, PARTS[name][0])
        self.freeze = freeze or unfreeze_at is not None
        self.unfreeze_at = unfreeze_at

    def frozen(self, epoch: int) -> bool:
        """Whether the backbone is frozen in ``epoch`` (1-based)."""
        return self.freeze and (self.unfreeze_at is None or epoch < self.unfreeze_at)

    def __call__(self, epoch: int) -> None:
        """Freeze or unfreeze the backbone for ``epoch`` (every block, BatchNorm statistics included)."""
        self.backbone.set_frozen(len(self.backbone) if self.frozen(epoch) else 0)

    def describe(self, factor: float) -> str:
        """One phrase for the run's header, e.g. "backbone frozen until epoch 3, then at lr x 0.1"."""
        if not self.freeze:
            return f"backbone at lr x {factor:g}"
        if self.unfreeze_at is None:
            return "backbone frozen (only the new head trains)"
        return f"backbone frozen until epoch {self.unfreeze_at}, then at lr x {factor:g}"


def backbone_info(args, weights) -> dict[str, Any]:
    """The checkpoint's record of the choices above: weights name, freezing, unfreezing epoch, lr factor."""
    return {"weights": weights.name, "freeze_backbone": bool(args.freeze_backbone or args.unfreeze_at),
            "unfreeze_at": args.unfreeze_at, "backbone_lr_factor": _factor(args)}


def _factor(args) -> float:
    return BACKBONE_LR_FACTOR if args.backbone_lr_factor is None else args.backbone_lr_factor


def backbone_args_problem(args) -> tuple[str, str] | None:
    """``(option, message)`` for a pretrained-backbone option that cannot work with the others, or None."""
    given = [o for o, v in (("--freeze-backbone", args.freeze_backbone), ("--unfreeze-at", args.unfreeze_at),
                            ("--backbone-lr-factor", args.backbone_lr_factor)) if v not in (None, False)]
    if args.model not in PRETRAINED_MODELS:
        if given:
            return given[0], (f"goes with a pretrained --model ({', '.join(PRETRAINED_MODELS)}); {args.model} "
                              f"trains from scratch, so it has no backbone: drop {given[0]}, or pass --model "
                              f"{PRETRAINED_MODELS[0]}")
        return None
    if args.channels == 1:
        return "--channels", (f"{args.model}'s ImageNet weights take 3-channel images (grayscale ones are repeated "
                              "to 3 channels): leave --channels out")
    if args.unfreeze_at is not None and args.unfreeze_at < 2:
        return "--unfreeze-at", (f"the backbone would train from epoch {args.unfreeze_at}, so nothing is frozen: "
                                 "leave --unfreeze-at out to fine-tune everything from the start, or use 2 or more")
    if args.unfreeze_at is not None and args.unfreeze_at > args.epochs:
        return "--unfreeze-at", (f"epoch {args.unfreeze_at} comes after the run ends (--epochs {args.epochs}): use "
                                 f"2..{args.epochs}, or --freeze-backbone alone to train only the head")
    return None


def _positive(text: str) -> float:
    """argparse type of --backbone-lr-factor: a number in (0, 10]."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (e.g. 0.1)") from None
    if not math.isfinite(value) or not 0 < value <= 10:
        raise argparse.ArgumentTypeError(f"must be > 0 and <= 10, got {text} (e.g. 0.1)")
    return value


def add_backbone_options(group) -> None:
    """``cvlab train``'s options for pretrained backbones (``cvlab.cli.build_parser`` adds them)."""
    group.add_argument("--freeze-backbone", action="store_true",
                       help="with a pretrained --model: train only the new head; the ImageNet backbone stays fixed")
    group.add_argument("--unfreeze-at", type=int, metavar="EPOCH",
                       help="with a pretrained --model: the backbone stays frozen until this epoch, then trains "
                            "too (at --lr x --backbone-lr-factor)")
    group.add_argument("--backbone-lr-factor", type=_positive, metavar="FACTOR",
                       help=f"with a pretrained --model: the backbone's learning rate is --lr times this "
                            f"(default {BACKBONE_LR_FACTOR:g}); the new head trains at --lr")
