"""MaskExplorer: pick a scene, toggle classes, move the overlay's opacity, switch between the
prediction, the truth and the wrong pixels (lesson 07)."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import torch

from ..segmentation import class_colors, draw_errors, draw_mask
from ._snapshot import snapshot_box

VIEWS = ("prediction", "truth", "errors")


class MaskExplorer:
    """Look through a segmenter's masks scene by scene.

    Args:
        images: (N, C, H, W) or (N, H, W), uint8 or float [0, 1] (not normalised).
        targets: int64 (N, H, W) true masks.
        predictions: int64 (N, H, W) predicted masks.
        class_names: num_classes names, the background first.

    ``render(index, view, classes, alpha)`` returns the drawn uint8 (3, H, W) image, ``figure``
    shows it with its pixel accuracy, ``widget`` wires both to a scene slider, class toggles, an
    opacity slider and a view switch.

    Raises:
        ValueError: no images, or images, targets and predictions of different counts or sizes.
    """

    def __init__(self, images, targets: torch.Tensor, predictions: torch.Tensor, class_names: Sequence[str]):
        if len(images) == 0:
            raise ValueError("no images to explore")
        if not len(images) == len(targets) == len(predictions):
            raise ValueError(f"{len(images)} images, {len(targets)} targets and {len(predictions)} predictions: give "
                             "one true and one predicted mask per image")
        if targets.shape != predictions.shape or tuple(targets.shape[-2:]) != tuple(images.shape[-2:]):
            raise ValueError(f"images {tuple(images.shape)}, targets {tuple(targets.shape)} and predictions "
                             f"{tuple(predictions.shape)} must share N, H and W")
        self.images, self.targets, self.predictions = images, targets, predictions
        self.class_names = list(class_names)
        self.colors = class_colors(len(self.class_names))

    def render(self, index: int = 0, view: str = "prediction", classes: Sequence[int] | None = None,
               alpha: float = 0.6) -> torch.Tensor:
        """uint8 (3, H, W): scene ``index`` with the predicted or true mask of ``classes`` (default
        all but the background) painted at opacity ``alpha``, or its wrong pixels in red.

        Raises:
            IndexError: index outside 0..N-1. ValueError: an unknown view, alpha outside [0, 1].
        """
        if not 0 <= index < len(self.images):
            raise IndexError(f"scene {index} does not exist: choose 0..{len(self.images) - 1}")
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
        image = self.images[index]
        if view == "errors":
            return draw_errors(image, self.predictions[index], self.targets[index], alpha=alpha)
        mask = (self.predictions if view == "prediction" else self.targets)[index]
        return draw_mask(image, mask, len(self.class_names), alpha=alpha, classes=classes, colors=self.colors)

    def figure(self, index: int = 0, view: str = "prediction", classes: Sequence[int] | None = None,
               alpha: float = 0.6):
        """The rendered scene, titled with its view and pixel accuracy."""
        drawn = self.render(index, view, classes, alpha)
        accuracy = float((self.predictions[index] == self.targets[index]).float().mean()) * 100
        fig, ax = plt.subplots(figsize=(3.6, 3.8))
        ax.imshow(drawn.permute(1, 2, 0).numpy())
        ax.set_title(f"scene {index}: {view}\npixel accuracy {accuracy:.1f} %", fontsize=9)
        ax.axis("off")
        fig.tight_layout()
        return fig

    def widget(self):
        """A scene slider, class toggles, an opacity slider, a view switch and the figure."""
        import ipywidgets as widgets
        from IPython.display import display

        scene = widgets.IntSlider(value=0, min=0, max=len(self.images) - 1, description="scene")
        alpha = widgets.FloatSlider(value=0.6, min=0.0, max=1.0, step=0.1, description="opacity")
        view = widgets.ToggleButtons(options=VIEWS, value="prediction")
        toggles = [widgets.Checkbox(value=True, description=name, indent=False,
                                    layout=widgets.Layout(width="110px")) for name in self.class_names[1:]]
        out = widgets.Output()
        last: dict = {}  # the figure drawn last, shown where widgets do not run

        def redraw(_=None):
            with out:
                out.clear_output(wait=True)
                chosen = [c for c, box in enumerate(toggles, start=1) if box.value]
                fig = self.figure(scene.value, view.value, chosen, alpha.value)
                display(fig)
                last["figure"] = fig
                plt.close(fig)

        for control in (scene, alpha, view, *toggles):
            control.observe(redraw, names="value")
        redraw()
        return snapshot_box([widgets.HBox([scene, alpha]), view, widgets.HBox(toggles[:5]), widgets.HBox(toggles[5:]),
                             out], last)
