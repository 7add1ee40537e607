"""cvlab.video: frames read as RGB tensors in the order asked, header facts, errors that name the
file and the fix; the committed hand-made annotations of vtest.avi are well formed."""
import json

import numpy as np
import pytest
import torch

from cvlab.provisioning import OPENCV_SAMPLES
from cvlab.video import VTEST_PEOPLE, opencv_samples_dir, read_frames, read_video_annotations, video_info

VTEST = opencv_samples_dir() / "vtest.avi"
needs_video = pytest.mark.skipif(not VTEST.is_file(), reason="the set-up places vtest.avi (python course.py setup)")


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory):
    """A 6-frame 32x24 MJPG video whose frame i is a solid colour: red channel 40*i, blue 200."""
    import cv2
    path = tmp_path_factory.mktemp("video") / "tiny.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (32, 24))
    for i in range(6):
        frame = np.zeros((24, 32, 3), np.uint8)
        frame[..., 2], frame[..., 0] = 40 * i, 200                 # OpenCV frames are BGR
        writer.write(frame)
    writer.release()
    return path


def test_read_frames_gives_rgb_in_the_order_asked(tiny_video):
    frames = read_frames(tiny_video, [4, 0, 4])
    assert frames.shape == (3, 3, 24, 32) and frames.dtype == torch.uint8
    red, blue = frames[:, 0].float().mean((1, 2)), frames[:, 2].float().mean((1, 2))
    assert red.tolist() == pytest.approx([160, 0, 160], abs=6) and blue.tolist() == pytest.approx([200] * 3, abs=6)
    info = video_info(tiny_video)
    assert (info.frames, info.width, info.height) == (6, 32, 24) and info.fps == pytest.approx(5.0)


def test_read_frames_errors_name_the_problem(tiny_video, tmp_path):
    with pytest.raises(ValueError, match="has 6 frames; frame 9 does not exist"):
        read_frames(tiny_video, [1, 9])
    with pytest.raises(ValueError, match="count from 0"):
        read_frames(tiny_video, [-1])
    with pytest.raises(ValueError, match="no frame indices"):
        read_frames(tiny_video, [])
    with pytest.raises(FileNotFoundError, match="no video at"):
        read_frames(tmp_path / "missing.avi", [0])
    with pytest.raises(FileNotFoundError, match="python course.py setup"):
        video_info(tmp_path / "opencv_samples" / "vtest.avi")
    (tmp_path / "notes.avi").write_text("not a video")
    with pytest.raises(ValueError, match="OpenCV cannot read"):
        read_frames(tmp_path / "notes.avi", [0])


@needs_video
def test_the_sample_video_and_its_hand_made_people():
    info = video_info(VTEST)
    assert (info.frames, info.width, info.height, info.fps) == (795, 768, 576, 10.0)
    frame_ids, targets = read_video_annotations(VTEST_PEOPLE)
    assert frame_ids == list(range(0, 800, 80)) and sum(len(t["boxes"]) for t in targets) == 58
    for t in targets:
        b = t["boxes"]
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all() and b.min() >= 0
        assert (b[:, 2] <= 768).all() and (b[:, 3] <= 576).all() and (t["labels"] == 1).all()
    doc = json.loads(VTEST_PEOPLE.read_text())
    assert doc["info"]["video_sha256"] == OPENCV_SAMPLES["vtest.avi"] and "how_made" in doc["info"]


def test_bad_annotation_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_video_annotations(tmp_path / "none.json")
    (tmp_path / "a.json").write_text(json.dumps({"images": [{"id": 1}], "annotations": []}))
    with pytest.raises(ValueError, match="frame_index"):
        read_video_annotations(tmp_path / "a.json")
    (tmp_path / "b.json").write_text(json.dumps({"images": [{"id": 1, "frame_index": 0}],
                                                 "annotations": [{"id": 1, "image_id": 2, "bbox": [0, 0, 1, 1],
                                                                  "category_id": 1}]}))
    with pytest.raises(ValueError, match="names image 2"):
        read_video_annotations(tmp_path / "b.json")


def test_opencv_and_tensor_layouts_round_trip():
    from cvlab.video import bgr_to_tensor, tensor_to_bgr

    rgb = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    bgr = tensor_to_bgr(rgb)
    assert bgr.shape == (5, 7, 3) and bgr.flags["C_CONTIGUOUS"] and (bgr[..., 0] == rgb[2].numpy()).all()
    assert torch.equal(bgr_to_tensor(bgr), rgb)
    assert np.array_equal(tensor_to_bgr(rgb.float() / 255), bgr)
    with pytest.raises(ValueError, match="cv2.imread returns None"):
        bgr_to_tensor(None)
    with pytest.raises(ValueError, match="a batch"):
        tensor_to_bgr(rgb[None])
    with pytest.raises(ValueError, match="normalisation"):
        tensor_to_bgr(rgb.float())


def test_iter_frames_streams_in_order_and_names_empty_videos(tiny_video, tmp_path):
    from cvlab.video import iter_frames

    got = list(iter_frames(tiny_video, step=2))
    assert [i for i, _ in got] == [0, 2, 4] and got[1][1].shape == (3, 24, 32)
    assert [i for i, _ in iter_frames(tiny_video, stop=3, bgr=True)] == [0, 1, 2]
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"RIFF\x00\x00\x00\x00AVI ")
    with pytest.raises(ValueError):
        next(iter_frames(empty))
    with pytest.raises(FileNotFoundError, match="no video"):
        next(iter_frames(tmp_path / "missing.mp4"))


def test_video_writer_writes_whole_files_only(tiny_video, tmp_path):
    from cvlab.video import VideoWriter, iter_frames, video_info

    out = tmp_path / "copy.mp4"
    with VideoWriter(out, fps=5, size=(32, 24)) as writer:
        for _, frame in iter_frames(tiny_video):
            writer.write(frame)
    info = video_info(out)
    assert (info.frames, info.width, info.height) == (6, 32, 24)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        VideoWriter(out, fps=5, size=(32, 24))
    broken = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError, match="interrupted"):
        with VideoWriter(broken, fps=5, size=(32, 24)) as writer:
            writer.write(torch.zeros(3, 24, 32, dtype=torch.uint8))
            raise RuntimeError("interrupted")
    assert not broken.exists() and not list(tmp_path.glob(".*partial*")), "no half-written video is left"
    with pytest.raises(ValueError, match="32x24"):
        with VideoWriter(tmp_path / "wrong.avi", fps=5, size=(32, 24)) as writer:
            writer.write(torch.zeros(3, 10, 10, dtype=torch.uint8))


def test_no_camera_says_so():
    from cvlab.video import open_camera

    with pytest.raises(RuntimeError, match="no camera at index 7"):
        open_camera(7)


def test_stage_timer_gives_ms_per_frame_and_fps(monkeypatch):
    import cvlab.video as video

    clock = iter([0.0, 0.002, 0.002, 0.006] * 3)  # decode takes 2 ms, model 4 ms, each frame
    monkeypatch.setattr(video.time, "perf_counter", lambda: next(clock))
    timer = video.StageTimer()
    with pytest.raises(ValueError, match="frame_done"):
        timer.summary()
    for _ in range(3):
        with timer.stage("decode"):
            pass
        with timer.stage("model"):
            pass
        timer.frame_done()
    summary = timer.summary()
    assert list(summary) == ["decode", "model", "total", "fps"]
    assert summary["decode"] == pytest.approx(2) and summary["model"] == pytest.approx(4)
    assert summary["total"] == pytest.approx(6) and summary["fps"] == pytest.approx(1000 / 6)
