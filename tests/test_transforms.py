import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from cvlab import transforms as T
from cvlab.datasets import fashion_mnist_tensors
from cvlab.images import read_photo


@pytest.mark.parametrize("augment", T.AUGMENTATIONS)
def test_train_presets_shapes_and_normalisation(augment):
    torch.manual_seed(0)
    cat = read_photo("chelsea")
    out = T.train_transforms(64, augment=augment, erasing=0.5)(cat)
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32
    pil = Image.fromarray(cat.permute(1, 2, 0).numpy())
    assert T.train_transforms(32, augment=augment)(pil).shape == (3, 32, 32)


def test_eval_is_deterministic_and_normalised():
    cat = read_photo("chelsea")
    t = T.eval_transforms(224, resize_ratio=0.875)
    a, b = t(cat), t(cat)
    assert torch.equal(a, b) and a.shape == (3, 224, 224)
    back = T.denormalize(a)
    assert 0 <= float(back.min()) and float(back.max()) <= 1
    plain = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224), v2.ToDtype(torch.float32, scale=True)])(cat)
    assert torch.allclose(back, plain, atol=1e-5)


def test_channels_and_fashion_mnist_stats(fmnist_root):
    x, _ = fashion_mnist_tensors("train")
    pixels = x.float() / 255
    assert pixels.mean().item() == pytest.approx(T.FASHION_MNIST_MEAN[0], abs=5e-4)
    assert pixels.std().item() == pytest.approx(T.FASHION_MNIST_STD[0], abs=5e-4)
    rgb = T.eval_transforms(28, channels=3)(x[0])
    back = T.denormalize(rgb)  # ImageNet statistics differ per channel; the pixels do not
    assert rgb.shape == (3, 28, 28) and torch.allclose(back[0], back[2], atol=1e-6)
    gray = T.train_transforms(28, T.FASHION_MNIST_MEAN, T.FASHION_MNIST_STD, augment="flip", channels=1)(read_photo("coffee"))
    assert gray.shape == (1, 28, 28)


def test_boxes_and_masks_follow_the_image():
    img = torch.zeros(3, 20, 40, dtype=torch.uint8)
    boxes = tv_tensors.BoundingBoxes([[0, 0, 10, 5]], format="XYXY", canvas_size=(20, 40))
    mask = tv_tensors.Mask(torch.zeros(20, 40, dtype=torch.uint8))
    mask[0:5, 0:10] = 1
    out_img, out_boxes, out_mask = v2.RandomHorizontalFlip(p=1.0)(tv_tensors.Image(img), boxes, mask)
    assert out_boxes.tolist() == [[30, 0, 40, 5]]
    assert out_mask[0:5, 30:40].all() and out_mask.sum() == 50


def test_bad_arguments():
    with pytest.raises(ValueError, match="augment must be one of"):
        T.train_transforms(32, augment="mixup")
    with pytest.raises(ValueError, match="image_size"):
        T.eval_transforms(0)
    with pytest.raises(ValueError, match="one value per channel"):
        T.eval_transforms(32, mean=(0.5, 0.5), std=(0.5, 0.5))
    with pytest.raises(ValueError, match="erasing"):
        T.train_transforms(32, erasing=2)
    with pytest.raises(ValueError, match="channels"):
        T.denormalize(torch.zeros(1, 4, 4))


# --- any photo into an ImageNet-pretrained model -------------------------------------------------
from cvlab.transforms import ToRGB, pretrained_transforms  # noqa: E402


def test_to_rgb_transform_is_cvlab_images_to_rgb():
    """ToRGB is the transform form of cvlab.images.to_rgb (tested there), picklable for workers."""
    import pickle

    from cvlab.images import to_rgb
    gray = torch.randint(0, 256, (1, 5, 6), dtype=torch.uint8)
    step = pickle.loads(pickle.dumps(ToRGB()))
    assert torch.equal(step(gray), to_rgb(gray)) and step(gray).shape == (3, 5, 6)


def test_pretrained_transforms_accept_gray_and_rgba_photos():
    from cvlab.pretrained import pretrained

    model, weights = pretrained("mobilenet_v2", "IMAGENET1K_V1", allow_download=False)
    preprocess = pretrained_transforms(weights)
    categories = weights.meta["categories"]
    color = read_photo("chelsea")
    inputs = {"RGB": color, "GRAY": read_photo("chelsea", "GRAY"),
              "RGBA": torch.cat([color, torch.full_like(color[:1], 255)]),
              "PIL LA": Image.fromarray(read_photo("chelsea", "GRAY")[0].numpy()).convert("LA")}
    for mode, image in inputs.items():
        x = preprocess(image)
        assert x.shape == (3, 224, 224) and x.dtype == torch.float32, mode
        with torch.inference_mode():
            top5 = [categories[i] for i in model(x[None])[0].topk(5).indices]
        assert {"Egyptian cat", "tabby", "tiger cat"} & set(top5), (mode, top5)
    small = pretrained_transforms(weights, crop_size=96, resize_size=96)
    assert small(inputs["GRAY"]).shape == (3, 96, 96)
    assert "ToRGB()" in repr(small)
    with pytest.raises(TypeError, match="weights enum"):
        pretrained_transforms("IMAGENET1K_V1")
