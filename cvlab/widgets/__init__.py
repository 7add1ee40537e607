"""Interactive notebook widgets (ipywidgets). Each widget's logic is a plain method that works
without a browser, so tests call it directly; ``.widget()`` only wires that logic to controls, and
its output also carries a PNG of the figure drawn last, for viewers that cannot run widgets.

* ``PredictionBrowser`` (lesson 02): pick a test image or class, see the top-k probabilities.
* ``AugmentationExplorer`` (lesson 03): pick a photo and a transform, move its sliders.
* ``DetectionExplorer`` (lesson 06): score-threshold and NMS sliders over a detector's raw boxes.
* ``MaskExplorer`` (lesson 07): pick a scene, toggle classes, opacity, prediction/truth/errors.
* ``GradCAMExplorer`` (lesson 08): pick a photo, one of its top classes and a layer.

One private module per widget; import them from here: ``from cvlab.widgets import PredictionBrowser``.
"""
from ._augmentation import AugmentationExplorer
from ._detection import DetectionExplorer
from ._gradcam import GradCAMExplorer
from ._masks import MaskExplorer
from ._predictions import PredictionBrowser

__all__ = ["AugmentationExplorer", "DetectionExplorer", "GradCAMExplorer", "MaskExplorer", "PredictionBrowser"]
