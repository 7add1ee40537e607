"""Where does a CNN look? Grad-CAM (Selvaraju et al., 2017, "Grad-CAM: Visual Explanations from
Deep Networks via Gradient-based Localization", arXiv:1610.02391).

For a target class c and a convolutional layer with activations A (K channels, h x w), Grad-CAM
weighs each channel by the spatial mean of the gradient of the class logit y_c with respect to
it, sums, and keeps the positive part:  cam = ReLU(sum_k mean_ij(dy_c / dA_k,ij) * A_k).
The map is upsampled to the input size (bilinear) and scaled to [0, 1] per image.

The API follows the well-kept library pytorch-grad-cam (``GradCAM(model, target_layers)(input,
targets)``), which the tests check this implementation against.
"""
from __future__ import annotations

import difflib

import torch
from torch import nn

__all__ = ["GradCAM", "find_layer"]


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """The sub-module called ``name`` (as in ``model.named_modules()``, e.g. "features.18").

    Raises:
        ValueError: no such layer; the message lists the nearest names.
    """
    modules = dict(model.named_modules())
    if name not in modules:
        near = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.4)
        raise ValueError(f"{type(model).__name__} has no layer {name!r}; nearest: {near or list(modules)[1:6]} "
                         "(list them all with [n for n, _ in model.named_modules()])")
    return modules[name]


class GradCAM:
    """Grad-CAM maps for a model and one of its layers, via a forward and a full backward hook.

    Use it as a context manager, which removes its hooks on exit::

        with GradCAM(model, "features.18") as cam:
            maps = cam(images)            # (B, H, W) in [0, 1], for the predicted classes

    Args:
        model: a classifier returning logits (B, num_classes); put in eval mode here.
        target_layer: the layer (a module of ``model``) or its name; usually the last
            convolutional block, whose maps keep some spatial resolution.

    Raises:
        ValueError: a layer name the model does not have (nearest names listed).
    """

    def __init__(self, model: nn.Module, target_layer: nn.Module | str):
        self.model = model.eval()
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
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a float tensor (B, C, H, W), preprocessed for the model; got {shape}")
        if not self._handles:
            raise RuntimeError("this GradCAM's hooks were removed; make a new one")
        x = images.detach().clone().requires_grad_(True)  # a full backward hook needs a graph to the input
        with torch.enable_grad():
            logits = self.model(x)
            b = len(logits)
            if targets is None:
                t = logits.argmax(1)
            else:
                t = torch.as_tensor(targets, device=logits.device).long().reshape(-1)
                if len(t) == 1:
                    t = t.expand(b)
                if len(t) != b:
                    raise ValueError(f"{b} images but {len(t)} targets: give one class per image, one for all, or None")
            self.model.zero_grad(set_to_none=True)
            logits.gather(1, t[:, None]).sum().backward()
        self.logits = logits.detach()
        weights = self.gradients.mean(dim=(2, 3), keepdim=True)             # (B, K, 1, 1)
        cam = torch.relu((weights * self.activations).sum(dim=1, keepdim=True))  # (B, 1, h, w)
        cam = nn.functional.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        lo = cam.amin(dim=(1, 2), keepdim=True)
        hi = cam.amax(dim=(1, 2), keepdim=True)
        return ((cam - lo) / (hi - lo).clamp_min(1e-12)).float()
