import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from cvlab import visualization as V
from cvlab.history import History
from cvlab.images import images_to_numpy


@pytest.mark.parametrize("images", [
    torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8),
    torch.rand(6, 3, 16, 16),
    torch.randint(0, 256, (6, 28, 28), dtype=torch.uint8),
    np.random.rand(3, 10, 10).astype(np.float32),  # one RGB image, CHW
])
def test_show_images_accepts_image_batches(images):
    fig = V.show_images(images, ncols=4, title="t")
    assert isinstance(fig, Figure)
    assert images_to_numpy(images).shape[-1] in (1, 3)


def test_show_images_titles_from_class_names():
    fig = V.show_images(torch.rand(2, 1, 8, 8), labels=[0, 1], class_names=["boot", "bag"])
    assert [ax.get_title() for ax in fig.axes[:2]] == ["boot", "bag"]


def test_image_errors_say_what_to_do():
    with pytest.raises(ValueError, match="HWC"):
        V.show_images(torch.rand(2, 28, 28, 3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        V.show_images(torch.randn(2, 1, 8, 8) * 5)
    assert isinstance(V.show_images(torch.randn(2, 1, 8, 8) * 5, normalize=True), Figure)
    with pytest.raises(TypeError, match="dtype"):
        V.show_images(torch.ones(2, 1, 8, 8, dtype=torch.int64))
    with pytest.raises(TypeError, match="Tensor or numpy"):
        V.show_images([[0.0]])
    with pytest.raises(ValueError, match="shaped"):
        V.show_images(torch.rand(1, 1, 1, 8, 8))
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        V.show_images(torch.rand(2, 1, 8, 8), labels=[0, 1, 2])


def test_plot_history():
    h = History([{"epoch": e, "train_loss": 1 / e, "train_acc": 80 + e, "val_loss": 1.1 / e, "val_acc": 79 + e}
                 for e in (1, 2, 3)])
    fig = V.plot_history(h)
    assert isinstance(fig, Figure)
    assert [ax.get_ylabel() for ax in fig.axes] == ["cross-entropy loss (nats)", "accuracy (%)"]
    with pytest.raises(ValueError, match="empty"):
        V.plot_history(History())


def test_plot_confusion_matrix():
    cm = np.array([[3, 1], [0, 4]])
    assert isinstance(V.plot_confusion_matrix(cm, ["a", "b"], normalize=True), Figure)
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        V.plot_confusion_matrix(cm, ["a", "b", "c"])


def test_plot_predictions_colours_right_and_wrong():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2]])
    fig = V.plot_predictions(torch.rand(2, 1, 8, 8), [0, 1], probs, ["a", "b"])
    colours = [ax.title.get_color() for ax in fig.axes[:2]]
    assert colours == ["green", "red"]
    assert fig.axes[0].get_title().startswith("a (90%)")
    with pytest.raises(ValueError, match="one of each"):
        V.plot_predictions(torch.rand(2, 1, 8, 8), [0], probs, ["a", "b"])
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        V.plot_predictions(torch.rand(2, 1, 8, 8), [0, 1], probs, ["a", "b", "c"])


def test_plot_model_comparison():
    rows = [{"model": "a", "test_acc": 84.0, "train_seconds": 2.0},
            {"model": "b", "test_acc": 91.0, "train_seconds": 30.0}]
    assert isinstance(V.plot_model_comparison(rows), Figure)
    with pytest.raises(ValueError, match="lacks"):
        V.plot_model_comparison([{"model": "a"}])
    with pytest.raises(ValueError, match="no results"):
        V.plot_model_comparison([])


def test_overlay_heatmap_blends_and_checks():
    from cvlab.visualization import overlay_heatmap, plot_heatmaps

    image = torch.randint(0, 256, (3, 8, 10), dtype=torch.uint8)
    heat = torch.rand(4, 5)
    assert np.allclose(overlay_heatmap(image, heat, alpha=0.0), image.permute(1, 2, 0).numpy() / 255, atol=1e-6)
    full = overlay_heatmap(image, torch.zeros(8, 10), alpha=1.0, cmap="gray")
    assert full.shape == (8, 10, 3) and np.allclose(full, 0)  # gray colormap of 0 is black
    assert overlay_heatmap(image[:1], heat).shape == (8, 10, 3)  # grayscale image, heat map resized
    with pytest.raises(ValueError, match=r"in \[0, 1\].*m.min\(\)"):
        overlay_heatmap(image, heat * 3)
    with pytest.raises(ValueError, match="2-D"):
        overlay_heatmap(image, heat[None])
    fig = plot_heatmaps(image, {"a": heat, "b": heat.T.contiguous().T}, title="t")
    assert isinstance(fig, Figure) and len(fig.axes) == 4  # image, two overlays, colour bar
    with pytest.raises(ValueError, match="at least one"):
        plot_heatmaps(image, {})


def test_draw_detections_returns_rgb_uint8_with_the_boxes():
    gray = torch.zeros(1, 40, 60, dtype=torch.uint8)
    drawn = V.draw_detections(gray, torch.tensor([[5.0, 5.0, 30.0, 20.0]]), torch.tensor([2]), ["bg", "a", "b"],
                              torch.tensor([0.9]), colors="red")
    assert drawn.shape == (3, 40, 60) and drawn.dtype == torch.uint8
    assert drawn[:, 5, 10].tolist() == [255, 0, 0] and drawn[:, 30, 50].tolist() == [0, 0, 0]
    sized = V.draw_detections(torch.rand(3, 40, 60), torch.tensor([[5.0, 5.0, 30.0, 20.0]]), torch.tensor([1]),
                              ["bg", "a"], font_size=10)
    assert sized.shape == (3, 40, 60)
    with pytest.raises(ValueError, match="1 boxes but 2 labels"):
        V.draw_detections(gray, torch.tensor([[5.0, 5.0, 30.0, 20.0]]), torch.tensor([1, 2]))


def test_plot_detections_counts_true_positives_false_positives_and_misses():
    target = {"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([1, 2])}
    pred = {"boxes": torch.tensor([[0.0, 0, 10, 10], [40, 40, 50, 50], [20, 20, 30, 30]]),
            "scores": torch.tensor([0.9, 0.8, 0.1]), "labels": torch.tensor([1, 1, 2])}
    fig = V.plot_detections(torch.zeros(2, 1, 64, 64), [pred, pred], [target, target], ["bg", "a", "b"])
    assert isinstance(fig, Figure)
    assert fig.axes[0].get_title() == "1 TP · 1 FP · 1 missed"        # the 0.1 detection is below the threshold
    only_targets = V.plot_detections(torch.zeros(1, 1, 64, 64), targets=[target])
    assert only_targets.axes[0].get_title() == ""
    with pytest.raises(ValueError, match="2 images but 1 predictions"):
        V.plot_detections(torch.zeros(2, 1, 64, 64), [pred])


def test_draw_detections_without_boxes_returns_the_image_quietly(recwarn):
    drawn = V.draw_detections(torch.full((1, 8, 8), 255, dtype=torch.uint8), torch.zeros(0, 4))
    assert drawn.shape == (3, 8, 8) and int(drawn.min()) == 255 and len(recwarn) == 0
