"""AugmentationExplorer: transforms.v2 augmentations on real photos, with sliders (lesson 03)."""
from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import torch
from torchvision.transforms import v2

from ..images import read_photo, sample_photos
from ..transforms import AUGMENTATION_SPECS
from ._snapshot import snapshot_box


class AugmentationExplorer:
    """Try torchvision ``transforms.v2`` augmentations on real photos, with sliders for their parameters.

    Args:
        images: name -> uint8 image tensor (C, H, W), C = 3; by default a few photos from
            ``cvlab.images.sample_photos()``, centre-cropped to 224x224.

    The logic is ``apply(image, transform, seed, **params)``; ``widget()`` wires it to controls.

    Raises:
        TypeError: ``images`` is not a dict.
        ValueError: no images (an empty dict, or none given and no sample photos installed), or
            an image that is not a uint8 (3, H, W) tensor.
    """

    def __init__(self, images: dict[str, torch.Tensor] | None = None):
        if images is None:
            square = v2.Compose([v2.Resize(224, antialias=True), v2.CenterCrop(224)])
            images = {n: square(read_photo(n)) for n in ("chelsea", "astronaut", "coffee", "rocket") if n in sample_photos()}
            if not images:
                raise ValueError("no sample photos are installed (scikit-image provides them): pass images={name: "
                                 "uint8 (3, H, W) tensor}, e.g. {'mine': cvlab.images.read_photo('photo.jpg')}")
        if not isinstance(images, Mapping):
            raise TypeError(f"images must be a dict {{name: uint8 (3, H, W) tensor}}, got {type(images).__name__}"
                            + ("; e.g. {f'image {i}': img for i, img in enumerate(images)}"
                               if isinstance(images, (list, tuple)) else ""))
        if not images:
            raise ValueError("give at least one image: {name: uint8 (3, H, W) tensor}")
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
        last: dict = {}  # the figure drawn last, shown where widgets do not run

        def redraw(*_):
            params = {s.description: s.value for s in sliders.children}
            with out:
                out.clear_output(wait=True)
                fig = self.figure(image.value, transform.value, seed.value, **params)
                display(fig)
                last["figure"] = fig
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
        return snapshot_box([w.HBox([image, transform, seed]), sliders, out], last)

