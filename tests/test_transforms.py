import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from cvlab import transforms as T
from cvlab.data import fashion_mnist_tensors, read_photo


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
from cvlab.transforms import ToRGB, pretrained_transforms, to_rgb  # noqa: E402


def test_to_rgb_tensors():
    gray = torch.randint(0, 256, (1, 5, 6), dtype=torch.uint8)
    rgb = to_rgb(gray)
    assert rgb.shape == (3, 5, 6) and all(torch.equal(rgb[c], gray[0]) for c in range(3))
    assert to_rgb(gray[0]).shape == (3, 5, 6)
    color = torch.randint(0, 256, (2, 3, 5, 6), dtype=torch.uint8)
    assert to_rgb(color) is color
    rgba = torch.cat([color, torch.full((2, 1, 5, 6), 255, dtype=torch.uint8)], dim=1)
    assert torch.equal(to_rgb(rgba), color)  # opaque: the colours as they are
    rgba[:, 3] = 0
    assert bool((to_rgb(rgba) == 255).all())  # transparent: white
    half = torch.tensor([[[0.2]], [[0.5]]])  # float gray + alpha 0.5 over white
    assert torch.allclose(to_rgb(half), torch.full((3, 1, 1), 0.2 * 0.5 + 0.5))
    with pytest.raises(ValueError, match="1-4 channels.*permute"):
        to_rgb(torch.zeros(5, 6, 3))
    with pytest.raises(TypeError, match="PIL image or a tensor"):
        to_rgb([[0, 1]])


def test_to_rgb_pil_modes():
    rgba = Image.new("RGBA", (4, 3), (10, 20, 30, 0))
    assert to_rgb(rgba).mode == "RGB" and to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("L", (4, 3), 77)).getpixel((1, 1)) == (77, 77, 77)
    assert to_rgb(Image.new("P", (4, 3))).mode == "RGB"
    deep = Image.fromarray(np.full((3, 4), 65535, dtype=np.uint16))
    assert to_rgb(deep).getpixel((0, 0)) == (255, 255, 255)  # 16-bit white stays white


def test_pretrained_transforms_accept_gray_and_rgba_photos():
    from cvlab.models import pretrained

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
