"""PredictionBrowser: a classifier's predictions, image by image (lesson 02)."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import torch
from torch import nn

from ..images import images_to_numpy, to_float_images
from ._checks import _check_model, _class_name_list, _check_k, _device, _check_outputs
from ._snapshot import snapshot_box


class PredictionBrowser:
    """Browse a model's predictions: pick a test image (optionally of one class), see the image,
    its true label and the top-k class probabilities.

    Args:
        model: a classifier returning logits (B, num_classes); run in eval mode on the CPU.
        images: uint8 (N, C, H, W) in [0, 255] or float32 in [0, 1], the images the model takes.
        labels: (N,) true class indices.
        class_names: one name per class.
        k: how many of the most probable classes to show.

    The model runs once on the first image when the browser is made, so a model that cannot take
    the images, or whose number of outputs is not the number of class names, is refused at once.

    Raises:
        TypeError: a model that is not an ``nn.Module``, images that are not a tensor (a list,
            a NumPy array), class names that are not a list of str, or a ``k`` that is not an int.
        ValueError: no images, mismatched lengths, labels that are not (N,) class indices or are
            outside 0..len(class_names)-1, ``k`` not in 1..num_classes, a model whose number of
            outputs is not ``len(class_names)``, or images of a shape or dtype that cannot be shown.
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 class_names: Sequence[str], k: int = 3):
        _check_model(model)
        if not isinstance(images, torch.Tensor):
            hint = ("stack a list of (C, H, W) tensors with torch.stack(images)" if isinstance(images, (list, tuple))
                    else "convert a NumPy array with torch.from_numpy(images)")
            raise TypeError(f"images must be a tensor (N, C, H, W), got {type(images).__name__}: {hint}")
        if len(images) == 0:
            raise ValueError("no images to browse: give at least one image (N >= 1)")
        labels = torch.as_tensor(labels)
        if labels.ndim != 1:
            raise ValueError(f"labels must be (N,) class indices, got shape {tuple(labels.shape)}"
                             + ("; for one-hot labels use labels.argmax(1)" if labels.ndim == 2 else ""))
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels: give one label per image")
        names = _class_name_list(class_names)
        _check_k("k", k, len(names))
        images_to_numpy(images[:1])  # checks shape and dtype early, with a clear message
        labels = labels.long()
        if int(labels.min()) < 0 or int(labels.max()) >= len(names):
            raise ValueError(f"labels must be class indices in 0..{len(names) - 1} ({len(names)} class names), got "
                             f"{int(labels.min())}..{int(labels.max())}")
        self.model = model
        self.images = images
        self.labels = labels
        self.class_names = names
        self.k = k
        _check_outputs(model, self._logits(0), names)

    def _logits(self, index: int) -> torch.Tensor:
        x = self.images[index:index + 1]
        x = to_float_images(x) if x.dtype == torch.uint8 else x.float()
        was_training = self.model.training
        try:
            with torch.inference_mode():
                return self.model.eval()(x.to(_device(self.model)))
        finally:
            self.model.train(was_training)

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
        probs = torch.softmax(self._logits(index), dim=1)[0].cpu()
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
        last: dict = {}  # the figure drawn last, shown where widgets do not run

        def redraw(*_):
            idx = self.indices(cls.value)
            with out:
                out.clear_output(wait=True)
                if not idx:
                    print("no images of this class")
                    return
                fig = self.figure(idx[min(pos.value, len(idx) - 1)])
                display(fig)
                last["figure"] = fig
                plt.close(fig)

        def on_class(*_):
            pos.max = max(0, len(self.indices(cls.value)) - 1)
            pos.value = 0
            redraw()

        cls.observe(on_class, names="value")
        pos.observe(redraw, names="value")
        redraw()
        return snapshot_box([w.HBox([cls, pos]), out], last)

