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

import torch
from torch import nn

from .models import find_layer
from .utils import model_mode

__all__ = ["GradCAM", "occlusion", "randomize_layers", "saliency"]


def _check_images(images) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        is_tensor = isinstance(images, torch.Tensor)
        got = f"{images.dtype} {tuple(images.shape)}" if is_tensor else type(images).__name__
        hint = (" (add a batch axis with x[None])" if is_tensor and images.ndim == 3 else
                " (convert uint8 images with cvlab.images.to_float_images, then preprocess them)"
                if is_tensor and images.dtype == torch.uint8 else
                " (stack a list of (C, H, W) tensors with torch.stack)" if isinstance(images, (list, tuple)) else "")
        raise ValueError(f"images must be a float tensor (B, C, H, W), preprocessed for the model; got {got}{hint}")


def _check_gradients_on(what: str) -> None:
    """torch.inference_mode() cannot be overridden by enable_grad: say so instead of failing in autograd."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(f"{what} needs gradients, and torch.inference_mode() turns them off (torch.enable_grad "
                           "cannot turn them back on inside it): call it outside the `with torch.inference_mode():` "
                           "block or the @torch.inference_mode() function (inside torch.no_grad() is fine)")


def _check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (a classifier returning logits), got {type(model).__name__}")


def _last_conv(model: nn.Module) -> str | None:
    """The name of the model's last nn.Conv2d, the usual Grad-CAM layer, or None."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return names[-1] if names else None


def _suggestion(model: nn.Module) -> str:
    conv = _last_conv(model)
    return (f"use the last convolutional block, e.g. {conv!r} (its last nn.Conv2d)" if conv else
            "this model has no nn.Conv2d: Grad-CAM needs a convolutional layer; try saliency or occlusion instead")


def _flat_output(module: nn.Module) -> bool:
    """True for a module whose output is surely (B, features), not maps: Linear, Flatten, or a
    Sequential that ends in one (run in order, so its last module gives its output)."""
    while isinstance(module, nn.Sequential) and len(module):
        module = module[-1]
    return isinstance(module, (nn.Linear, nn.Flatten))


def _check_cam_layer(model: nn.Module, layer: nn.Module, name: str) -> None:
    """The checks possible before a forward pass: the layer is in the model, and gives maps."""
    if not any(m is layer for m in model.modules()):
        raise ValueError(f"the layer {name} is not part of this {type(model).__name__} (is it from another copy of the "
                         "model, e.g. before randomize_layers or copy.deepcopy?); give the layer's name instead")
    if layer is model:
        raise ValueError(f"cannot explain the whole model ({type(model).__name__}): its output is the logits "
                         f"(B, num_classes), not feature maps (B, K, h, w); {_suggestion(model)}")
    if _flat_output(layer):
        raise ValueError(f"cannot explain layer {name} ({type(layer).__name__}): its output is (B, features), not "
                         f"feature maps (B, K, h, w) with a place for each value; {_suggestion(model)}")


def _check_cam_output(model: nn.Module, name: str, output) -> None:
    """The check after a forward pass: the layer ran and gave (B, K, h, w) maps."""
    if output is None:
        raise ValueError(f"the layer {name} did not run in the model's forward pass, so it has nothing to explain; "
                         f"{_suggestion(model)}")
    if not isinstance(output, torch.Tensor) or output.ndim != 4:
        got = f"shape {tuple(output.shape)}" if isinstance(output, torch.Tensor) else f"a {type(output).__name__}"
        raise ValueError(f"cannot explain layer {name}: Grad-CAM needs its output to be feature maps (B, K, h, w), "
                         f"got {got}; {_suggestion(model)}")


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
        TypeError: a model that is not an ``nn.Module``, or a layer that is neither a module nor a name.
        ValueError: a layer name the model does not have (nearest names listed), a layer module
            that is not part of the model, or a layer whose output is not feature maps (an
            ``nn.Linear``, ``nn.Flatten``, or a Sequential ending in one; the message names the
            last convolutional layer to use instead). When called: a layer that gives no
            (B, K, h, w) maps or does not run, or whose tensors an in-place operation changes
            (each message says how to fix it).
        RuntimeError: when called under ``torch.inference_mode()``, which turns gradients off.
    """

    def __init__(self, model: nn.Module, target_layer: nn.Module | str):
        _check_model(model)
        if isinstance(target_layer, str):
            self.layer, name = find_layer(model, target_layer), repr(target_layer)
        elif isinstance(target_layer, nn.Module):
            self.layer = target_layer
            name = next((repr(n) for n, m in model.named_modules() if m is target_layer), type(target_layer).__name__)
        else:
            raise TypeError(f"target_layer must be a layer of the model or its name (e.g. 'features.18'), got "
                            f"{type(target_layer).__name__}; list the names with [n for n, _ in model.named_modules()]")
        _check_cam_layer(model, self.layer, name)
        self.model = model
        self.layer_name = name
        self.activations: torch.Tensor | None = None
        self.gradients: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None
        self._handles = [
            self.layer.register_forward_hook(self._save_activations),
            self.layer.register_full_backward_hook(self._save_gradients),
        ]

    def _save_activations(self, module, inputs, output):
        self.activations = output.detach() if isinstance(output, torch.Tensor) else output

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
            ValueError: a wrong input shape, a number of targets that is not B, or a layer that
                gives no feature maps (B, K, h, w).
            RuntimeError: called under ``torch.inference_mode()``, or after ``remove()``.
        """
        _check_images(images)
        _check_gradients_on("Grad-CAM")
        if not self._handles:
            raise RuntimeError("this GradCAM's hooks were removed; make a new one")
        x = images.detach().clone().requires_grad_(True)  # a full backward hook needs a graph to the input
        self.activations = self.gradients = None
        with torch.enable_grad(), model_mode(self.model, False):
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
            _check_cam_output(self.model, self.layer_name, self.activations)
            t = _targets(targets, logits)
            self.model.zero_grad(set_to_none=True)
            logits.gather(1, t[:, None]).sum().backward()
        if self.gradients is None:
            raise ValueError(f"the class score does not depend on layer {self.layer_name}, so it has no gradient to "
                             f"weigh its maps with; {_suggestion(self.model)}")
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
        TypeError: a model that is not an ``nn.Module``.
        ValueError: a wrong input shape, a wrong number of targets or a class out of range.
        RuntimeError: called under ``torch.inference_mode()``, which turns gradients off.
    """
    _check_model(model)
    _check_images(images)
    _check_gradients_on("saliency")
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad(), model_mode(model, False):
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
        TypeError: a model that is not an ``nn.Module``.
        ValueError: a wrong input shape, targets, or a patch/stride that does not fit the image.
    """
    _check_model(model)
    _check_images(images)
    b, _, h, w = images.shape
    if not (isinstance(patch, int) and isinstance(stride, int) and 1 <= patch <= min(h, w) and stride >= 1):
        raise ValueError(f"patch and stride must be integers with 1 <= patch <= {min(h, w)} (the image side) "
                         f"and stride >= 1; got patch={patch!r}, stride={stride!r}")
    with model_mode(model, False):
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
        TypeError: ``names`` given as one str rather than a list of names.
        ValueError: a name the model does not have (nearest names listed).
    """
    import copy

    if isinstance(names, str):
        raise TypeError(f"names must be a list of layer names, e.g. [{names!r}]; got the str {names!r}")
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
