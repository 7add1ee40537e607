"""Video files read with OpenCV (``cv2.VideoCapture``), as torch tensors in the course's layout.

torchvision removed its video reading in 0.28; OpenCV reads every common container and codec.
OpenCV gives frames as NumPy (H, W, 3) uint8 in **BGR** order; everything here returns RGB
uint8 tensors (3, H, W), the layout torchvision's models, transforms and ``draw_bounding_boxes``
take. The set-up places OpenCV's sample video ``vtest.avi`` (795 frames of 768x576 pedestrians,
10 fps, from Debian's ``opencv-doc``) in ``opencv_samples_dir()``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple, Sequence

import torch

from .datasets import data_root

__all__ = ["VTEST_PEOPLE", "VideoInfo", "opencv_samples_dir", "read_frames", "read_video_annotations", "video_info"]

#: lesson 06's hand-checked people in 10 frames of vtest.avi (COCO JSON, committed with the course)
VTEST_PEOPLE = Path(__file__).resolve().parents[1] / "data" / "annotations" / "vtest_people.json"

SETUP_HINT = "run `python course.py setup` (it places OpenCV's sample video and photos in data/opencv_samples)"


def opencv_samples_dir(root: str | os.PathLike | None = None) -> Path:
    """Where the set-up puts OpenCV's sample files: ``<data root>/opencv_samples`` (``vtest.avi``,
    ``messi5.jpg``, ``fruits.jpg``, ``dnn/object_detection_classes_coco.txt``)."""
    return data_root(root) / "opencv_samples"


class VideoInfo(NamedTuple):
    """What ``video_info`` returns, from the file's header."""
    frames: int    #: number of frames
    fps: float     #: frames per second
    width: int     #: pixels
    height: int    #: pixels


def _open(path: str | os.PathLike):
    import cv2

    path = Path(path)
    if not path.is_file():
        hint = SETUP_HINT if path.parent.name == "opencv_samples" else "check the path"
        raise FileNotFoundError(f"no video at {path}: {hint}")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"OpenCV cannot read {path} as a video ({path.stat().st_size:,} bytes): the file is "
                         "truncated, not a video, or in a codec this OpenCV build lacks")
    return capture


def video_info(path: str | os.PathLike) -> VideoInfo:
    """Frame count, frame rate and size of a video, from its header (``cv2.CAP_PROP_*``).

    Raises:
        FileNotFoundError: no such file (for the sample video, the message names the set-up).
        ValueError: OpenCV cannot open it as a video.
    """
    import cv2

    capture = _open(path)
    try:
        return VideoInfo(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), float(capture.get(cv2.CAP_PROP_FPS)),
                         int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    finally:
        capture.release()


def read_frames(path: str | os.PathLike, indices: Sequence[int]) -> torch.Tensor:
    """Read chosen frames of a video as RGB.

    Frames are decoded in order from the start (seeking in compressed video is approximate in
    many codecs, so this reads exactly the frames asked for, at the cost of decoding those before).

    Args:
        path: a video file OpenCV can read.
        indices: frame numbers from 0, in any order, repeats allowed.

    Returns:
        uint8 (N, 3, H, W) in [0, 255], RGB, one frame per index in the order given.

    Raises:
        FileNotFoundError: no such file.
        ValueError: no indices, a negative index, an index past the last frame (the message gives
            the frame count), or a file OpenCV cannot read.
    """
    import cv2

    wanted = [int(i) for i in indices]
    if not wanted:
        raise ValueError("no frame indices given: pass e.g. [0, 80, 160]")
    if min(wanted) < 0:
        raise ValueError(f"frame indices count from 0, got {min(wanted)}")
    capture = _open(path)
    frames: dict[int, torch.Tensor] = {}
    try:
        last, index = max(wanted), 0
        while index <= last:
            ok, bgr = capture.read()
            if not ok:
                raise ValueError(f"{Path(path).name} has {index} frames; frame {last} does not exist "
                                 f"(indices go up to {index - 1})")
            if index in wanted:
                frames[index] = torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).contiguous()
            index += 1
    finally:
        capture.release()
    return torch.stack([frames[i] for i in wanted])


def read_video_annotations(path: str | os.PathLike) -> tuple[list[int], list[dict[str, torch.Tensor]]]:
    """Boxes drawn on frames of a video, from a COCO JSON whose ``images`` carry a
    ``frame_index`` (as ``data/annotations/vtest_people.json``, lesson 06's hand-checked people).

    Returns:
        ``(frame_indices, targets)``: the frames in the file's order, and per frame a dict with
        ``boxes`` float32 (K, 4) XYXY pixels and ``labels`` int64 (K,) COCO category ids.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not COCO JSON with ``images`` (each with ``frame_index``) and ``annotations``,
            or an annotation naming an image that is not listed.
    """
    import json

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no annotation file at {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        frames = {img["id"]: int(img["frame_index"]) for img in doc["images"]}
        annotations = doc["annotations"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not COCO JSON with images (each with a frame_index) and annotations: "
                         f"{type(exc).__name__}: {exc}") from None
    per_image: dict[int, list] = {i: [] for i in frames}
    for ann in annotations:
        if ann.get("image_id") not in per_image:
            raise ValueError(f"{path}: annotation {ann.get('id')} names image {ann.get('image_id')}, which is not "
                             "in its images")
        x, y, w, h = ann["bbox"]
        per_image[ann["image_id"]].append(([x, y, x + w, y + h], ann["category_id"]))
    targets = [{"boxes": torch.tensor([b for b, _ in rows], dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor([c for _, c in rows], dtype=torch.int64)} for rows in per_image.values()]
    return list(frames.values()), targets
