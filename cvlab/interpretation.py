"""Where does a CNN look? Grad-CAM, vanilla-gradient saliency and occlusion sensitivity, and the
sanity check that tells a real explanation from an edge detector.

* Grad-CAM: Selvaraju et al., 2017, "Grad-CAM: Visual Explanations from Deep Networks via
  Gradient-based Localization", arXiv:1610.02391.
* Saliency: Simonyan, Vedaldi and Zisserman, 2013, "Deep Inside Convolutional Networks",
  arXiv:1312.6034.
* Occlusion: Zeiler and Fergus, 2014, "Visualizing and Understanding Convolutional Networks",
  arXiv:1311.2901.
* Sanity checks: Adebayo et al., 2018, "Sanity Checks for Saliency Maps", arXiv:1810.03292.

For a target class c and a convolutional layer with activations A (K channels, h x w), Grad-CAM
weighs each channel by the spatial mean of the gradient of the class logit y_c with respect to
it, sums, and keeps the positive part:  cam = ReLU(sum_k mean_ij(dy_c / dA_k,ij) * A_k).
The Grad-CAM map is upsampled to the input size (bilinear) and scaled to [0, 1] per image.

The API follows the well-kept library pytorch-grad-cam (``GradCAM(model, target_layers)(input,
targets)``), which the tests check this implementation against.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from .models import find_layer

__all__ = ["GradCAM", "occlusion", "randomize_layers", "saliency"]


def _check_images(images) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor (B, C, H, W), preprocessed for the model; got {shape}"
                         + (" (add a batch axis with x[None])" if isinstance(images, torch.Tensor) and images.ndim == 3 else ""))


def _targets(targets, logits: torch.Tensor) -> torch.Tensor:
    """One class index per image: None -> the predicted classes; an int -> the same for all."""
    b = len(logits)
    if targets is None:
        return logits.argmax(1)
    t = torch.as_tensor(targets, device=logits.device).long().reshape(-1)
    if len(t) == 1:
        t = t.expand(b)
    if len(t) != b:
        raise ValueError(f"{b} images but {len(t)} targets: give one class per image, one for all, or None")
    if int(t.min()) < 0 or int(t.max()) >= logits.shape[1]:
        raise ValueError(f"target classes must be in [0, {logits.shape[1] - 1}], got {t.tolist()}")
    return t


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """Eval mode for the block (BatchNorm and dropout as at inference), then the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _scale01(maps: torch.Tensor) -> torch.Tensor:
    lo = maps.amin(dim=(-2, -1), keepdim=True)
    hi = maps.amax(dim=(-2, -1), keepdim=True)
    return ((maps - lo) / (hi - lo).clamp_min(1e-12)).float()


class GradCAM:
    """Grad-CAM maps for a model and one of its layers, via a forward and a full backward hook.

    Use it as a context manager, which removes its hooks on exit::

        with GradCAM(model, "features.18") as cam:
            maps = cam(images)            # (B, H, W) in [0, 1], for the predicted classes

    Args:
        model: a classifier returning logits (B, num_classes); run in eval mode during each
            call, then left in the mode it was in.
        target_layer: the layer (a module of ``model``) or its name; usually the last
            convolutional block, whose maps keep some spatial resolution.

    Raises:
        ValueError: a layer name the model does not have (nearest names listed); when called, a
            layer whose tensors an in-place operation changes (the message says how to fix it).
    """

    def __init__(self, model: nn.Module, target_layer: nn.Module | str):
        self.model = model
        self.layer = find_layer(model, target_layer) if isinstance(target_layer, str) else target_layer
        self.activations: torch.Tensor | None = None
        self.gradients: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None
        self._handles = [
            self.layer.register_forward_hook(self._save_activations),
            self.layer.register_full_backward_hook(self._save_gradients),
        ]

    def _save_activations(self, module, inputs, output):
        self.activations = output.detach()

    def _save_gradients(self, module, grad_input, grad_output):
        self.gradients = grad_output[0].detach()

    def remove(self) -> None:
        """Remove the hooks (the context manager does this on exit)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "GradCAM":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __call__(self, images: torch.Tensor, targets: int | list[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Grad-CAM maps for a batch.

        Args:
            images: float (B, C, H, W), preprocessed as the model expects.
            targets: the class per image (one int for all, a list or tensor of B ints), or None
                for each image's predicted class. The logits are kept in ``self.logits``.

        Returns:
            float32 (B, H, W) in [0, 1] (a map that is zero everywhere stays zero).

        Raises:
            ValueError: a wrong input shape, or a number of targets that is not B.
        """
        _check_images(images)
        if not self._handles:
            raise RuntimeError("this GradCAM's hooks were removed; make a new one")
        x = images.detach().clone().requires_grad_(True)  # a full backward hook needs a graph to the input
        with torch.enable_grad(), _eval_mode(self.model):
            try:
                logits = self.model(x)
            except RuntimeError as exc:
                if "inplace" not in str(exc):
                    raise
                raise ValueError(
                    "the hooked layer's output (or input) is changed by an in-place operation, which a full backward "
                    "hook cannot follow (typically nn.ReLU(inplace=True) right after it). Hook another layer, or turn "
                    "in-place off first: for m in model.modules(): m.inplace = False if hasattr(m, 'inplace') else None"
                ) from None
            t = _targets(targets, logits)
            self.model.zero_grad(set_to_none=True)
            logits.gather(1, t[:, None]).sum().backward()
        self.logits = logits.detach()
        weights = self.gradients.mean(dim=(2, 3), keepdim=True)             # (B, K, 1, 1)
        cam = torch.relu((weights * self.activations).sum(dim=1, keepdim=True))  # (B, 1, h, w)
        cam = nn.functional.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return _scale01(cam)


def saliency(model: nn.Module, images: torch.Tensor, targets=None) -> torch.Tensor:
    """Vanilla-gradient saliency (Simonyan et al., 2013): how much each pixel changes the class score.

    The map is |d logit_c / d x|, the largest over the colour channels, scaled to [0, 1] per image.
    Cheap (one backward pass) but noisy, and close to an edge detector (see the sanity check).

    Args:
        model: a classifier returning logits (B, num_classes); run in eval mode, then left in
            the mode it was in.
        images: float (B, C, H, W), preprocessed as the model expects.
        targets: the class per image (an int for all, B ints) or None for the predicted classes.

    Returns:
        float32 (B, H, W) in [0, 1].

    Raises:
        ValueError: a wrong input shape, a wrong number of targets or a class out of range.
    """
    _check_images(images)
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad(), _eval_mode(model):
        logits = model(x)
        t = _targets(targets, logits)
        (grad,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), x)
    return _scale01(grad.abs().amax(dim=1))


@torch.inference_mode()
def occlusion(model: nn.Module, images: torch.Tensor, targets=None, *, patch: int = 32, stride: int = 16,
              baseline: float = 0.0, batch_size: int = 64) -> torch.Tensor:
    """Occlusion sensitivity (Zeiler and Fergus, 2014): cover a square, see the class probability drop.

    A ``patch`` x ``patch`` square of value ``baseline`` slides over the image with ``stride``;
    each pixel's value is the mean drop of the target class's softmax probability over the
    squares that covered it. No gradients: it treats the model as a black box, at the cost of
    one forward pass per position ((H - patch) / stride + 1)^2 per image.

    Args:
        model: a classifier returning logits (B, num_classes); run in eval mode, then left in
            the mode it was in.
        images: float (B, C, H, W), preprocessed as the model expects.
        targets: the class per image (an int for all, B ints) or None for the predicted classes.
        patch, stride: square side and step, pixels; ``patch <= min(H, W)``.
        baseline: the value that fills the square; 0.0 in normalised space is the dataset mean
            colour (ImageNet's for torchvision's weights).
        batch_size: occluded copies per forward pass.

    Returns:
        float32 (B, H, W): drop in probability, in [-1, 1] (fractions, x 100 for percentage
        points); positive where covering the pixels hurts the class, negative where it helps.

    Raises:
        ValueError: a wrong input shape, targets, or a patch/stride that does not fit the image.
    """
    _check_images(images)
    b, _, h, w = images.shape
    if not (isinstance(patch, int) and isinstance(stride, int) and 1 <= patch <= min(h, w) and stride >= 1):
        raise ValueError(f"patch and stride must be integers with 1 <= patch <= {min(h, w)} (the image side) "
                         f"and stride >= 1; got patch={patch!r}, stride={stride!r}")
    with _eval_mode(model):
        probs = model(images).softmax(1)
        t = _targets(targets, probs)
        p0 = probs.gather(1, t[:, None])[:, 0]
        tops = list(range(0, h - patch + 1, stride))
        lefts = list(range(0, w - patch + 1, stride))
        if tops[-1] != h - patch:
            tops.append(h - patch)  # cover the bottom and right edges too
        if lefts[-1] != w - patch:
            lefts.append(w - patch)
        positions = [(i, j) for i in tops for j in lefts]
        out = torch.zeros(b, h, w)
        count = torch.zeros(h, w)
        for i, j in positions:
            count[i:i + patch, j:j + patch] += 1
        for k in range(b):
            drops = []
            for start in range(0, len(positions), batch_size):
                chunk = positions[start:start + batch_size]
                x = images[k:k + 1].repeat(len(chunk), 1, 1, 1)
                for n, (i, j) in enumerate(chunk):
                    x[n, :, i:i + patch, j:j + patch] = baseline
                drops.append(p0[k] - model(x).softmax(1)[:, t[k]])
            for (i, j), d in zip(positions, torch.cat(drops).cpu()):
                out[k, i:i + patch, j:j + patch] += d
    return (out / count).float()


def randomize_layers(model: nn.Module, names: list[str], *, seed: int = 0) -> nn.Module:
    """A copy of ``model`` whose named layers are re-initialised at random: the model
    parameter randomisation test of Adebayo et al. (2018).

    An explanation method worth trusting depends on what the model learned: its maps must change
    when the top layers' weights are replaced by random ones. A method whose maps stay the
    same is showing the image (edges), not the model.

    Args:
        model: left unchanged.
        names: module names (``model.named_modules()``), e.g. ["classifier", "features.18"];
            every sub-module with ``reset_parameters`` in them is re-initialised (PyTorch's
            default initialisation; BatchNorm also forgets its running statistics).
        seed: seeds the new weights, so the check is reproducible.

    Returns:
        the randomised copy, in eval mode.

    Raises:
        ValueError: a name the model does not have (nearest names listed).
    """
    import copy

    for name in names:
        find_layer(model, name)
    clone = copy.deepcopy(model)
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):  # the global random state is left as it was
        torch.manual_seed(seed)
        for name in names:
            for module in find_layer(clone, name).modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
    return clone.eval()
