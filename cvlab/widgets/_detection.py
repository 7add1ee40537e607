"""DetectionExplorer: score threshold and NMS IoU sliders over a detector's raw boxes (lesson 06)."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import torch

from ..detection import filter_detections
from ..visualization import draw_detections
from ._snapshot import snapshot_box


class DetectionExplorer:
    """See which of a detector's boxes survive a score threshold and class-wise NMS.

    Args:
        image: the image the boxes belong to, (C, H, W) uint8 [0, 255] or float [0, 1].
        prediction: the detector's raw output for it, before its own filtering: ``boxes``
            float (N, 4) XYXY pixels, ``scores`` (N,) in [0, 1], ``labels`` (N,) class ids. (For
            a torchvision detector set ``model.score_thresh`` low and ``model.nms_thresh = 1.0``
            to get them.)
        class_names: names indexed by label.

    ``kept(score_threshold, iou_threshold)`` is ``cvlab.detection.filter_detections`` (score
    filter, then ``torchvision.ops.batched_nms``); ``figure`` draws the kept boxes; ``widget``
    wires both to two sliders.

    Raises:
        TypeError: a prediction that is not a dict of tensors.
        ValueError: missing keys, boxes not (N, 4), or keys of different lengths.
    """

    def __init__(self, image: torch.Tensor, prediction: dict, class_names: Sequence[str]):
        if not isinstance(prediction, dict) or not all(isinstance(prediction.get(k), torch.Tensor)
                                                       for k in ("boxes", "scores", "labels")):
            raise TypeError("prediction must be a dict with tensors 'boxes' (N, 4), 'scores' (N,) and 'labels' (N,), "
                            "as a torchvision detector returns for one image")
        boxes = prediction["boxes"]
        if boxes.dim() != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes must be (N, 4) XYXY pixels, got {tuple(boxes.shape)}")
        if not len(boxes) == len(prediction["scores"]) == len(prediction["labels"]):
            raise ValueError(f"{len(boxes)} boxes, {len(prediction['scores'])} scores and {len(prediction['labels'])} "
                             "labels: give one score and one label per box")
        self.image = image
        self.prediction = {k: prediction[k].detach().cpu() for k in ("boxes", "scores", "labels")}
        self.class_names = list(class_names)

    def kept(self, score_threshold: float = 0.5, iou_threshold: float = 0.5) -> dict[str, torch.Tensor]:
        """The detections left after the score threshold and NMS, in descending score order
        (see ``filter_detections``; raises ValueError for thresholds outside [0, 1])."""
        return filter_detections(self.prediction, score_threshold, iou_threshold)

    def figure(self, score_threshold: float = 0.5, iou_threshold: float = 0.5):
        """The image with the kept boxes; the title counts them out of the raw boxes."""
        kept = self.kept(score_threshold, iou_threshold)
        drawn = draw_detections(self.image, kept["boxes"], kept["labels"], self.class_names, kept["scores"], width=1)
        fig, ax = plt.subplots(figsize=(4, 4.3))
        ax.imshow(drawn.permute(1, 2, 0).numpy())
        ax.set_title(f"{len(kept['boxes'])} of {len(self.prediction['boxes'])} boxes kept\n"
                     f"score >= {score_threshold:.2f}, NMS IoU {iou_threshold:.2f}", fontsize=9)
        ax.axis("off")
        fig.tight_layout()
        return fig

    def widget(self):
        """Two sliders (score threshold, NMS IoU threshold) and the figure they control."""
        import ipywidgets as widgets
        from IPython.display import display

        score = widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="score ≥")
        iou = widgets.FloatSlider(value=0.5, min=0.05, max=1.0, step=0.05, description="NMS IoU")
        out = widgets.Output()
        last: dict = {}  # the figure drawn last, shown where widgets do not run

        def redraw(_=None):
            with out:
                out.clear_output(wait=True)
                fig = self.figure(score.value, iou.value)
                display(fig)
                last["figure"] = fig
                plt.close(fig)

        score.observe(redraw, names="value")
        iou.observe(redraw, names="value")
        redraw()
        return snapshot_box([widgets.HBox([score, iou]), out], last)
