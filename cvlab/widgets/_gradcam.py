"""GradCAMExplorer: where a classifier looks, per image, class and layer (lesson 08)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Sequence

import matplotlib.pyplot as plt
import torch
from torch import nn

from ..interpretation import GradCAM, _check_cam_layer, _check_cam_output
from ..models import find_layer
from ..transforms import IMAGENET_MEAN, IMAGENET_STD, denormalize
from ..visualization import plot_heatmaps
from ._checks import _check_model, _class_name_list, _check_k, _check_outputs
from ._snapshot import snapshot_box


class GradCAMExplorer:
    """Where does the model look? Choose an image, a target class and a layer; see the Grad-CAM map.

    Args:
        model: a classifier returning logits (B, num_classes).
        inputs: image name -> one preprocessed input, float (C, H, W), as the model takes it
            (e.g. ``pretrained_transforms(weights)(read_photo("chelsea"))``).
        class_names: one name per class (``weights.meta["categories"]`` for ImageNet).
        layers: names of layers to choose from (``model.named_modules()``), e.g.
            ["features.18", "features.14", "features.7"]; the first is the default.
        mean, std: the normalisation of ``inputs``, undone for display (ImageNet's by default).
        top_k: how many of the most probable classes the class menu offers.

    The logic is ``classes(image)``, ``heatmap(image, target, layer)`` and ``figure(...)``;
    ``widget()`` wires it to three dropdowns. Maps are computed with ``cvlab.interpretation.GradCAM``
    and kept, so going back to a choice is instant.

    Everything is checked when the explorer is made, with one forward pass of the first input:
    a model that cannot take the inputs, a number of outputs that is not ``len(class_names)``,
    and a layer that gives no feature maps (B, K, h, w) are refused at once, not at the first click.

    Raises:
        TypeError: a model that is not an ``nn.Module``, inputs that are not a dict, class names
            that are not a list of str, layers that are not a list of names (one str must be in a
            list), or a ``top_k`` that is not an int.
        ValueError: no inputs, an input that is not a float (C, H, W) tensor, ``mean``/``std``
            whose length is not the inputs' channel count, no layers, a layer name the model does
            not have (nearest names listed), a layer that cannot be explained (an ``nn.Linear``,
            ``nn.Flatten`` or any layer whose output is not (B, K, h, w); the message names the
            last convolutional layer), a model whose number of outputs is not
            ``len(class_names)``, or a bad ``top_k``.
    """

    def __init__(self, model: nn.Module, inputs: dict[str, torch.Tensor], class_names: Sequence[str],
                 layers: Sequence[str], *, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, top_k: int = 5):
        _check_model(model)
        if not isinstance(inputs, Mapping):
            raise TypeError(f"inputs must be a dict {{name: preprocessed float (C, H, W) tensor}}, got "
                            f"{type(inputs).__name__}" + ("; e.g. {f'image {i}': x for i, x in enumerate(inputs)}"
                                                          if isinstance(inputs, (list, tuple)) else ""))
        if not inputs:
            raise ValueError("give at least one input image: {name: preprocessed (C, H, W) tensor}")
        for name, x in inputs.items():
            if not isinstance(x, torch.Tensor) or x.ndim != 3 or not x.is_floating_point():
                is_tensor = isinstance(x, torch.Tensor)
                hint = ("; drop the batch axis with x[0]" if is_tensor and x.ndim == 4 else
                        "; preprocess it first (e.g. cvlab.transforms.pretrained_transforms(weights)(image))"
                        if is_tensor and not x.is_floating_point() else "")
                raise ValueError(f"input {name!r} must be one preprocessed float tensor (C, H, W), got "
                                 f"{f'{x.dtype} {tuple(x.shape)}' if is_tensor else type(x).__name__}{hint}")
        names = _class_name_list(class_names)
        if isinstance(layers, str):
            raise TypeError(f"layers must be a list of layer names; got the str {layers!r}: write [{layers!r}]")
        layers = list(layers)
        if not layers:
            raise ValueError("give at least one layer name, e.g. the last convolutional block")
        for layer in layers:
            if not isinstance(layer, str):
                raise TypeError(f"layers must be layer names (str) such as 'features.18', got a {type(layer).__name__}"
                                "; list them with [n for n, _ in model.named_modules()]")
            _check_cam_layer(model, find_layer(model, layer), repr(layer))
        _check_k("top_k", top_k, len(names))
        channels = next(iter(inputs.values())).shape[0]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean and std must have one value per channel of the inputs ({channels}), got "
                             f"{len(mean)} and {len(std)}: pass the normalisation the inputs were preprocessed with "
                             f"(mean=(0.0,) * {channels}, std=(1.0,) * {channels} for images that were not normalised)")
        self.model = model
        self.inputs = dict(inputs)
        self.class_names = names
        self.layers = layers
        self.mean, self.std = tuple(mean), tuple(std)
        self.top_k = top_k
        self._maps: dict[tuple[str, int, str], torch.Tensor] = {}
        self._check_layers_and_outputs()

    def _check_layers_and_outputs(self) -> None:
        """One forward pass of the first input: every layer gives maps; one output per class name."""
        outputs: dict[str, object] = {}

        def keep(name):
            return lambda module, args, output: outputs.setdefault(name, output)

        handles = [find_layer(self.model, n).register_forward_hook(keep(n)) for n in self.layers]
        was_training = self.model.training
        try:
            with torch.inference_mode():
                logits = self.model.eval()(next(iter(self.inputs.values()))[None])
        finally:
            self.model.train(was_training)
            for h in handles:
                h.remove()
        for n in self.layers:
            _check_cam_output(self.model, repr(n), outputs.get(n))
        _check_outputs(self.model, logits, self.class_names)

    def _input(self, image: str) -> torch.Tensor:
        if image not in self.inputs:
            raise ValueError(f"unknown image {image!r}; choose one of {sorted(self.inputs)}")
        return self.inputs[image]

    @torch.inference_mode()
    def classes(self, image: str) -> list[tuple[int, str, float]]:
        """The ``top_k`` most probable classes: ``(class index, name, probability in %)``, best first."""
        was_training = self.model.training
        try:
            probs = self.model.eval()(self._input(image)[None]).softmax(1)[0]
        finally:
            self.model.train(was_training)
        top = probs.topk(self.top_k)
        return [(int(i), self.class_names[int(i)], 100 * float(p)) for p, i in zip(top.values, top.indices)]

    def heatmap(self, image: str, target: int | None = None, layer: str | None = None) -> torch.Tensor:
        """Grad-CAM map for ``image``, class ``target`` (None: the predicted one) at ``layer``
        (None: the first of ``layers``).

        Returns:
            float32 (H, W) in [0, 1], the input's size.

        Raises:
            ValueError: an unknown image, a layer not offered, or a class out of range.
        """
        x = self._input(image)
        layer = self.layers[0] if layer is None else layer
        if layer not in self.layers:
            raise ValueError(f"layer {layer!r} is not offered; choose one of {self.layers}")
        target = self.classes(image)[0][0] if target is None else int(target)
        if not 0 <= target < len(self.class_names):
            raise ValueError(f"target must be a class index in 0..{len(self.class_names) - 1}, got {target}")
        key = (image, target, layer)
        if key not in self._maps:
            with GradCAM(self.model, layer) as cam:
                self._maps[key] = cam(x[None], target)[0]
        return self._maps[key]

    def figure(self, image: str, target: int | None = None, layer: str | None = None):
        """The image and its Grad-CAM overlay for the class and layer; returns the Figure."""
        top = self.classes(image)
        probs = {i: p for i, _, p in top}
        target = top[0][0] if target is None else int(target)
        cam = self.heatmap(image, target, layer)
        layer = self.layers[0] if layer is None else layer
        shown = denormalize(self._input(image), self.mean, self.std)
        p = f" ({probs[target]:.1f}%)" if target in probs else ""
        return plot_heatmaps(shown, {f"Grad-CAM at {layer}\nclass: {self.class_names[target]}{p}": cam},
                             title=f"{image}: where the model looks for the class", size=2.3)

    def widget(self):
        """Dropdowns for the image, the target class (its top-k) and the layer, and the figure."""
        import ipywidgets as w
        from IPython.display import display

        image = w.Dropdown(options=sorted(self.inputs), description="image")
        target = w.Dropdown(description="class")
        layer = w.Dropdown(options=self.layers, value=self.layers[0], description="layer")
        out = w.Output()
        last: dict = {}  # the figure drawn last, shown where widgets do not run

        updating = []  # non-empty while the class menu is refilled: one redraw, not one per change

        def redraw(*_):
            if updating or target.value is None:
                return
            with out:
                out.clear_output(wait=True)
                fig = self.figure(image.value, target.value, layer.value)
                display(fig)
                last["figure"] = fig
                plt.close(fig)

        def new_image(*_):
            updating.append(True)
            options = [(f"{name} ({p:.1f}%)", i) for i, name, p in self.classes(image.value)]
            target.options = options
            target.value = options[0][1]
            updating.clear()
            redraw()

        image.observe(new_image, names="value")
        for control in (target, layer):
            control.observe(redraw, names="value")
        new_image()
        return snapshot_box([w.HBox([image, target, layer]), out], last)

