"""Explorer boxes that carry a picture of their last figure, for where widgets do not run."""
from __future__ import annotations

import base64
import io


#: the snapshot is a thumbnail: a lesson's figures are drawn at 72 dpi, and committed notebooks stay small
SNAPSHOT_DPI = 48


def snapshot_box(children: list, last: dict):
    """An ``ipywidgets.VBox`` of ``children`` whose output also holds ``last["figure"]`` (the figure
    the explorer drew last, a matplotlib Figure) as a PNG beside the widget view.

    JupyterLab with a live kernel shows the widget; an untrusted or reopened notebook, GitHub's
    viewer and a static HTML export, which cannot run widgets, show the PNG instead of the
    widget's Python repr (``VBox(children=...``).
    """
    import ipywidgets as widgets

    class SnapshotVBox(widgets.VBox):
        def _repr_mimebundle_(self, **kwargs):
            bundle = super()._repr_mimebundle_(**kwargs)
            figure = last.get("figure")
            if isinstance(bundle, dict) and figure is not None:
                buffer = io.BytesIO()
                figure.savefig(buffer, format="png", dpi=SNAPSHOT_DPI, bbox_inches="tight")
                bundle["image/png"] = base64.b64encode(buffer.getvalue()).decode("ascii")
            return bundle

    return SnapshotVBox(children)
