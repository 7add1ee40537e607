"""Interactive notebook widgets (ipywidgets). Each widget's logic is a plain method that works
without a browser, so tests call it directly; ``.widget()`` only wires that logic to controls.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import torch
from torch import nn

from torchvision.transforms import v2

from .images import images_to_numpy, read_photo, sample_photos, to_float_images
from .interpretation import GradCAM
from .models import find_layer
from .transforms import AUGMENTATION_SPECS, IMAGENET_MEAN, IMAGENET_STD, denormalize
from .visualization import plot_heatmaps

__all__ = ["AugmentationExplorer", "GradCAMExplorer", "PredictionBrowser"]


class PredictionBrowser:
    """Browse a model's predictions: pick a test image (optionally of one class), see the image,
    its true label and the top-k class probabilities.

    Args:
        model: a classifier returning logits (B, num_classes); run in eval mode on the CPU.
        images: uint8 (N, C, H, W) in [0, 255] or float32 in [0, 1], the images the model takes.
        labels: (N,) true class indices.
        class_names: one name per class.
        k: how many of the most probable classes to show.

    Raises:
        ValueError: mismatched lengths, or ``k`` not in 1..num_classes.
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 class_names: Sequence[str], k: int = 3):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels: give one label per image")
        if not 1 <= k <= len(class_names):
            raise ValueError(f"k must be in 1..{len(class_names)}, got {k}")
        images_to_numpy(images[:1])  # checks shape and dtype early, with a clear message
        self.model = model
        self.images = images
        self.labels = torch.as_tensor(labels).long()
        self.class_names = list(class_names)
        self.k = k

    def indices(self, class_name: str | None = None) -> list[int]:
        """Indices of the images whose true class is ``class_name`` (all images for None).

        Raises:
            ValueError: an unknown class name (the message lists the known ones).
        """
        if class_name is None or class_name == "all classes":
            return list(range(len(self.labels)))
        if class_name not in self.class_names:
            raise ValueError(f"unknown class {class_name!r}; choose one of {self.class_names}")
        c = self.class_names.index(class_name)
        return torch.nonzero(self.labels == c).flatten().tolist()

    @torch.inference_mode()
    def predict(self, index: int) -> dict:
        """The prediction for image ``index``.

        Returns:
            dict with ``index``, ``true`` (class name), ``predicted`` (class name), ``correct``
            (bool) and ``top_k``: a list of ``(class name, probability in %)``, most probable first.

        Raises:
            IndexError: ``index`` outside 0..N-1.
        """
        if not 0 <= index < len(self.labels):
            raise IndexError(f"index must be in 0..{len(self.labels) - 1}, got {index}")
        x = self.images[index:index + 1]
        x = to_float_images(x) if x.dtype == torch.uint8 else x.float()
        was_training = self.model.training
        device = next(self.model.parameters()).device
        try:
            probs = torch.softmax(self.model.eval()(x.to(device)), dim=1)[0].cpu()
        finally:
            self.model.train(was_training)
        top_p, top_i = probs.topk(self.k)
        true = self.class_names[int(self.labels[index])]
        predicted = self.class_names[int(top_i[0])]
        return {"index": index, "true": true, "predicted": predicted, "correct": true == predicted,
                "top_k": [(self.class_names[int(i)], 100 * float(p)) for p, i in zip(top_p, top_i)]}

    def figure(self, index: int):
        """The image beside a bar chart of its top-k probabilities; returns the Figure."""
        info = self.predict(index)
        img = images_to_numpy(self.images[index:index + 1])[0]
        fig, (ax_i, ax_p) = plt.subplots(1, 2, figsize=(7, 2.6), gridspec_kw={"width_ratios": [1, 1.6]})
        ax_i.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        ax_i.set_title(f"image {index}: true {info['true']}", fontsize=9)
        ax_i.axis("off")
        names = [n for n, _ in info["top_k"]][::-1]
        values = [p for _, p in info["top_k"]][::-1]
        colors = ["green" if n == info["true"] else "tab:red" if n == info["predicted"] else "tab:gray" for n in names]
        bars = ax_p.barh(names, values, color=colors)
        ax_p.bar_label(bars, fmt="%.1f%%", padding=2)
        ax_p.set(xlim=(0, 115), xlabel="probability (%)",
                 title=f"top-{self.k}: {'right' if info['correct'] else 'wrong'}")
        fig.tight_layout()
        return fig

    def widget(self):
        """The interactive browser: a class filter, a slider over its images, and the figure."""
        import ipywidgets as w
        from IPython.display import display

        cls = w.Dropdown(options=["all classes", *self.class_names], description="class")
        pos = w.IntSlider(min=0, max=len(self.labels) - 1, description="image #")
        out = w.Output()

        def redraw(*_):
            idx = self.indices(cls.value)
            with out:
                out.clear_output(wait=True)
                if not idx:
                    print("no images of this class")
                    return
                fig = self.figure(idx[min(pos.value, len(idx) - 1)])
                display(fig)
                plt.close(fig)

        def on_class(*_):
            pos.max = max(0, len(self.indices(cls.value)) - 1)
            pos.value = 0
            redraw()

        cls.observe(on_class, names="value")
        pos.observe(redraw, names="value")
        redraw()
        return w.VBox([w.HBox([cls, pos]), out])


class AugmentationExplorer:
    """Try torchvision ``transforms.v2`` augmentations on real photos, with sliders for their parameters.

    Args:
        images: name -> uint8 image tensor (C, H, W), C = 3; by default a few photos from
            ``cvlab.images.sample_photos()``, centre-cropped to 224x224.

    The logic is ``apply(image, transform, seed, **params)``; ``widget()`` wires it to controls.

    Raises:
        ValueError: an image that is not a uint8 (3, H, W) tensor.
    """

    def __init__(self, images: dict[str, torch.Tensor] | None = None):
        if images is None:
            square = v2.Compose([v2.Resize(224, antialias=True), v2.CenterCrop(224)])
            images = {n: square(read_photo(n)) for n in ("chelsea", "astronaut", "coffee", "rocket") if n in sample_photos()}
        for name, img in images.items():
            if not isinstance(img, torch.Tensor) or img.dtype != torch.uint8 or img.ndim != 3 or img.shape[0] != 3:
                raise ValueError(f"image {name!r} must be a uint8 tensor shaped (3, H, W)")
        self.images = dict(images)

    @staticmethod
    def parameters(transform: str) -> dict[str, tuple]:
        """The parameters of ``transform``: name -> (min, max, step, default)."""
        if transform not in AUGMENTATION_SPECS:
            raise ValueError(f"unknown transform {transform!r}; choose one of {sorted(AUGMENTATION_SPECS)}")
        return dict(AUGMENTATION_SPECS[transform][1])

    def apply(self, image: str, transform: str, seed: int = 0, **params) -> torch.Tensor:
        """The image after the transform, with the given parameters (missing ones take their default).

        Returns:
            uint8 (3, H', W') tensor; the same seed and parameters give the same result.

        Raises:
            ValueError: an unknown image, transform or parameter, or a value outside its range.
        """
        if image not in self.images:
            raise ValueError(f"unknown image {image!r}; choose one of {sorted(self.images)}")
        spec = self.parameters(transform)
        unknown = sorted(set(params) - set(spec))
        if unknown:
            raise ValueError(f"{transform} has no parameter {unknown[0]!r}; its parameters: {sorted(spec) or 'none'}")
        values = {}
        for name, (lo, hi, _, default) in spec.items():
            value = params.get(name, default)
            if not lo <= value <= hi:
                raise ValueError(f"{transform}: {name} must be in [{lo}, {hi}], got {value}")
            values[name] = value
        with torch.random.fork_rng(devices=[]):  # the caller's random state is left untouched
            torch.manual_seed(seed)
            return AUGMENTATION_SPECS[transform][0](**values)(self.images[image])

    def figure(self, image: str, transform: str, seed: int = 0, **params):
        """Original and transformed image side by side; returns the Figure."""
        out = self.apply(image, transform, seed, **params)
        fig, axes = plt.subplots(1, 2, figsize=(5.0, 2.6))
        for ax, img, title in ((axes[0], self.images[image], f"{image} ({self.images[image].shape[2]}x{self.images[image].shape[1]} px)"),
                               (axes[1], out, f"{transform}" + ("\n" + ", ".join(f"{k}={v}" for k, v in params.items()) if params else ""))):
            ax.imshow(img.permute(1, 2, 0).numpy())
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        fig.tight_layout()
        return fig

    def widget(self):
        """Dropdowns for the image and the transform, a seed slider, one slider per parameter."""
        import ipywidgets as w
        from IPython.display import display

        image = w.Dropdown(options=sorted(self.images), description="image")
        transform = w.Dropdown(options=list(AUGMENTATION_SPECS), value="RandomRotation", description="transform")
        seed = w.IntSlider(min=0, max=20, value=0, description="seed")
        sliders = w.VBox()
        out = w.Output()

        def redraw(*_):
            params = {s.description: s.value for s in sliders.children}
            with out:
                out.clear_output(wait=True)
                fig = self.figure(image.value, transform.value, seed.value, **params)
                display(fig)
                plt.close(fig)

        def rebuild(*_):
            made = []
            for name, (lo, hi, step, default) in self.parameters(transform.value).items():
                cls = w.IntSlider if all(isinstance(v, int) for v in (lo, hi, step, default)) else w.FloatSlider
                slider = cls(min=lo, max=hi, step=step, value=default, description=name, continuous_update=False)
                slider.observe(redraw, names="value")
                made.append(slider)
            sliders.children = made
            redraw()

        for control in (image, seed):
            control.observe(redraw, names="value")
        transform.observe(rebuild, names="value")
        rebuild()
        return w.VBox([w.HBox([image, transform, seed]), sliders, out])


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

    Raises:
        ValueError: no inputs, an input that is not a float (C, H, W) tensor, no layers, a
            layer name the model does not have (nearest names listed), or a bad ``top_k``.
    """

    def __init__(self, model: nn.Module, inputs: dict[str, torch.Tensor], class_names: Sequence[str],
                 layers: Sequence[str], *, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, top_k: int = 5):
        if not inputs:
            raise ValueError("give at least one input image: {name: preprocessed (C, H, W) tensor}")
        for name, x in inputs.items():
            if not isinstance(x, torch.Tensor) or x.ndim != 3 or not x.is_floating_point():
                raise ValueError(f"input {name!r} must be one preprocessed float tensor (C, H, W), got "
                                 f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if not layers:
            raise ValueError("give at least one layer name, e.g. the last convolutional block")
        for layer in layers:
            find_layer(model, layer)
        if not 1 <= top_k <= len(class_names):
            raise ValueError(f"top_k must be in 1..{len(class_names)}, got {top_k}")
        self.model = model
        self.inputs = dict(inputs)
        self.class_names = list(class_names)
        self.layers = list(layers)
        self.mean, self.std = tuple(mean), tuple(std)
        self.top_k = top_k
        self._maps: dict[tuple[str, int, str], torch.Tensor] = {}

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

        updating = []  # non-empty while the class menu is refilled: one redraw, not one per change

        def redraw(*_):
            if updating or target.value is None:
                return
            with out:
                out.clear_output(wait=True)
                fig = self.figure(image.value, target.value, layer.value)
                display(fig)
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
        return w.VBox([w.HBox([image, target, layer]), out])
