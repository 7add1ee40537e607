"""Interactive notebook widgets (ipywidgets). Each widget's logic is a plain method that works
without a browser, so tests call it directly; ``.widget()`` only wires that logic to controls.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import torch
from torch import nn

from .data import to_float_images
from .visualization import images_to_numpy

__all__ = ["PredictionBrowser"]


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
        self.model.eval()
        device = next(self.model.parameters()).device
        probs = torch.softmax(self.model(x.to(device)), dim=1)[0].cpu()
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
