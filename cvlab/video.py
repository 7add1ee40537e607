"""Video with OpenCV (``cv2.VideoCapture`` / ``cv2.VideoWriter``): frames as torch tensors in the
course's layout, annotated videos written safely, cameras, and where a real-time loop spends its time.

torchvision removed its video reading in 0.28; OpenCV reads every common container and codec.
OpenCV gives frames as NumPy (H, W, 3) uint8 in **BGR** order; everything here returns RGB
uint8 tensors (3, H, W), the layout torchvision's models, transforms and ``draw_bounding_boxes``
take. The set-up places OpenCV's sample video ``vtest.avi`` (795 frames of 768x576 pedestrians,
10 fps, from Debian's ``opencv-doc``) in ``opencv_samples_dir()``.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np

import torch

from .datasets import data_root

__all__ = ["StageTimer", "VTEST_PEOPLE", "VideoInfo", "VideoWriter", "bgr_to_tensor", "iter_frames", "open_camera",
           "opencv_samples_dir", "read_frames", "read_video_annotations", "tensor_to_bgr", "video_info"]

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


def bgr_to_tensor(bgr: np.ndarray) -> torch.Tensor:
    """An OpenCV image (``cv2.imread``, ``VideoCapture.read``) as the course's image tensor.

    Args:
        bgr: uint8 (H, W, 3) in BGR order, values in [0, 255].

    Returns:
        uint8 (3, H, W) RGB, a copy (changing it leaves ``bgr`` alone).

    Raises:
        ValueError: not a uint8 (H, W, 3) array (``cv2.imread`` gives None for a file it cannot read).
    """
    if not isinstance(bgr, np.ndarray) or bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        got = "None (cv2.imread returns None when it cannot read a file: check the path)" if bgr is None else \
            f"{type(bgr).__name__} {tuple(getattr(bgr, 'shape', ()))} {getattr(bgr, 'dtype', '')}"
        raise ValueError(f"expected an OpenCV BGR image, uint8 (H, W, 3), got {got}")
    return torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).permute(2, 0, 1).contiguous()


def tensor_to_bgr(image: torch.Tensor) -> np.ndarray:
    """The course's image tensor as an OpenCV image, for ``cv2.imwrite``, drawing and ``VideoWriter``.

    Args:
        image: RGB (3, H, W), uint8 in [0, 255] or float in [0, 1] (rounded to uint8).

    Returns:
        uint8 (H, W, 3) BGR, C-contiguous (OpenCV's drawing functions need that).

    Raises:
        ValueError: not a (3, H, W) tensor, or a float image outside [0, 1].
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an RGB image tensor (3, H, W), got {type(image).__name__} "
                         f"{tuple(getattr(image, 'shape', ()))}: a batch? take one image, e.g. images[0]")
    if image.is_floating_point():
        if image.min() < 0 or image.max() > 1:
            raise ValueError("a float image must lie in [0, 1]: undo any normalisation before converting to OpenCV")
        image = (image * 255).round().to(torch.uint8)
    return np.ascontiguousarray(image.detach().cpu().permute(1, 2, 0).numpy()[..., ::-1])


def iter_frames(path: str | os.PathLike, *, stop: int | None = None, step: int = 1,
                bgr: bool = False) -> Iterator[tuple[int, torch.Tensor | np.ndarray]]:
    """Decode a video in order, one frame at a time (memory stays at one frame).

    Args:
        path: a video file OpenCV can read.
        stop: stop before this frame number (None: to the end).
        step: yield every ``step``-th frame (the others are still decoded: compressed frames
            depend on the ones before).
        bgr: yield OpenCV's own (H, W, 3) uint8 BGR arrays (no conversion) instead of RGB tensors.

    Yields:
        ``(index, frame)``: the frame number from 0 and the frame, uint8 (3, H, W) RGB tensor or
        (H, W, 3) BGR array.

    Raises:
        FileNotFoundError: no such file.
        ValueError: OpenCV cannot read it, it has no frames, or step < 1.
    """
    if step < 1:
        raise ValueError(f"step must be at least 1, got {step}")
    capture = _open(path)
    try:
        index = 0
        while stop is None or index < stop:
            ok, frame = capture.read()
            if not ok:
                if index == 0:
                    raise ValueError(f"{Path(path).name} has no frames OpenCV can decode: an empty or broken video")
                return
            if index % step == 0:
                yield index, (frame if bgr else bgr_to_tensor(frame))
            index += 1
    finally:
        capture.release()


class VideoWriter:
    """Write frames to a video file, safely: into a temporary file beside it, renamed into place
    only when closed without an error, so an interrupted run never leaves half a video, and never
    over an existing file unless ``overwrite=True``. A context manager around ``cv2.VideoWriter``.

    Args:
        path: the video to write; ``.mp4`` (codec 'mp4v') or ``.avi`` (codec 'MJPG').
        fps: frames per second of the result.
        size: ``(width, height)`` in pixels; every frame must have it.
        overwrite: replace an existing file.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        ValueError: another suffix, fps <= 0, a frame of another size or type (``write``).
        RuntimeError: OpenCV cannot open a writer for the codec.

    Example::

        with VideoWriter("out.mp4", fps=10, size=(768, 576)) as writer:
            writer.write(frame)      # RGB (3, H, W) tensor or BGR (H, W, 3) array
    """

    CODECS = {".mp4": "mp4v", ".avi": "MJPG"}

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int], *, overwrite: bool = False):
        import cv2

        self.path = Path(path)
        if self.path.suffix.lower() not in self.CODECS:
            raise ValueError(f"write .mp4 or .avi, got {self.path.name!r}")
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} exists: choose another name, or pass overwrite=True")
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.size, self.frames = (int(size[0]), int(size[1])), 0
        self._partial = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self._writer = cv2.VideoWriter(str(self._partial), cv2.VideoWriter_fourcc(*self.CODECS[self.path.suffix.lower()]),
                                       float(fps), self.size)
        if not self._writer.isOpened():
            self._partial.unlink(missing_ok=True)
            raise RuntimeError(f"OpenCV cannot write {self.path.suffix} video here (codec "
                               f"{self.CODECS[self.path.suffix.lower()]}): try the other suffix (.mp4 or .avi)")

    def write(self, frame: torch.Tensor | np.ndarray) -> None:
        """Append one frame: an RGB (3, H, W) tensor (uint8, or float in [0, 1]) or a BGR (H, W, 3) uint8 array."""
        bgr = tensor_to_bgr(frame) if isinstance(frame, torch.Tensor) else frame
        if not isinstance(bgr, np.ndarray) or bgr.dtype != np.uint8 or bgr.shape != (self.size[1], self.size[0], 3):
            raise ValueError(f"a frame must be {self.size[0]}x{self.size[1]} (width x height), uint8 with 3 channels; "
                             f"got {tuple(getattr(bgr, 'shape', ()))} {getattr(bgr, 'dtype', '')}")
        self._writer.write(bgr)
        self.frames += 1

    def close(self, keep: bool = True) -> None:
        """Finish the file and move it into place (``keep=False``: delete it instead)."""
        self._writer.release()
        if keep and self.frames:
            os.replace(self._partial, self.path)
        else:
            self._partial.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(keep=exc_type is None)


def open_camera(index: int = 0):
    """Open a camera with OpenCV (``cv2.VideoCapture(index)``) and check that it gives a frame.

    Returns:
        the open ``cv2.VideoCapture``; release it when done.

    Raises:
        RuntimeError: no camera at that index (none attached, a container or a server without one,
            another program holding it, or no permission): the message says so and what to try.
    """
    import cv2

    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(0)  # silent: OpenCV's own warnings (on the C stderr) say less than the error below
    try:
        capture = cv2.VideoCapture(int(index))
        works = capture.isOpened() and capture.read()[0]
    finally:
        cv2.utils.logging.setLogLevel(level)
    if not works:
        capture.release()
        raise RuntimeError(f"no camera at index {index}: this machine has none (a server or a container), another "
                           "program holds it, or access was refused. Run the same loop on a video file instead "
                           "(cvlab.video.iter_frames), or try another index")
    return capture


class StageTimer:
    """Wall-clock time per named stage of a loop, e.g. decode, preprocess, model, draw, write.

    ``with timer.stage("model"): ...`` adds the seconds spent in the block (``time.perf_counter``);
    ``timer.summary()`` gives each stage's mean milliseconds per frame and the frames per second
    of the whole loop. ``frames`` counts the calls of ``timer.frame_done()``.
    """

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.frames = 0

    @contextmanager
    def stage(self, name: str):
        """Time the block as stage ``name`` (stages keep their first-seen order)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def frame_done(self) -> None:
        """Count one frame."""
        self.frames += 1

    def summary(self) -> dict[str, float]:
        """``{stage: ms per frame, ..., "total": ms per frame, "fps": frames per second}``.

        Raises:
            ValueError: no frame was counted yet.
        """
        if not self.frames:
            raise ValueError("no frame counted: call frame_done() once per frame")
        per_frame = {name: 1000 * s / self.frames for name, s in self.seconds.items()}
        total = sum(per_frame.values())
        return {**per_frame, "total": total, "fps": 1000 / total if total else float("inf")}
