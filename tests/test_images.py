"""cvlab.images: reading files and photos, and the conversions between formats."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from cvlab.images import images_to_numpy, read_photo, sample_photos, to_float_images, to_rgb


def test_to_float_images(toy_data):
    images, _ = toy_data
    out = to_float_images(images)
    assert out.dtype == torch.float32 and torch.equal(out, v2.ToDtype(torch.float32, scale=True)(images))
    assert torch.allclose(out * 255, images.float())
    with pytest.raises(TypeError, match="uint8"):
        to_float_images(out)


def test_sample_photos_and_read_photo(tmp_path):
    photos = sample_photos()
    assert {"chelsea", "coffee", "astronaut", "rocket", "grace_hopper", "china", "flower"} <= set(photos)
    cat = read_photo("chelsea")
    assert cat.shape == (3, 300, 451) and cat.dtype == torch.uint8
    import skimage.data
    assert torch.equal(cat.permute(1, 2, 0), torch.from_numpy(skimage.data.chelsea()))
    assert read_photo(photos["grace_hopper"], mode="GRAY").shape[0] == 1
    with pytest.raises(ValueError, match="one of"):
        read_photo("unicorn")
    with pytest.raises(ValueError, match="mode"):
        read_photo("chelsea", mode="CMYK")
    with pytest.raises(FileNotFoundError):
        read_photo(tmp_path / "none.png")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photos["grace_hopper"].read_bytes()[:300])
    with pytest.raises(ValueError, match="broken.jpg"):
        read_photo(broken)


def test_read_photo_modes_and_bit_depths(tmp_path):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert read_photo(tmp_path / "rgba.png").shape == (3, 4, 5)
    assert read_photo(tmp_path / "rgba.png", mode="UNCHANGED").shape == (4, 4, 5)
    Image.fromarray(np.full((4, 5), 77, np.uint8), "L").save(tmp_path / "gray.png")
    rgb = read_photo(tmp_path / "gray.png")
    assert rgb.shape == (3, 4, 5) and int(rgb.min()) == int(rgb.max()) == 77
    Image.fromarray(np.full((4, 5), 65535, np.uint16)).save(tmp_path / "deep.png")
    deep = read_photo(tmp_path / "deep.png", mode="UNCHANGED")
    assert deep.shape == (1, 4, 5) and deep.dtype == torch.uint8 and int(deep.max()) == 255


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


def test_images_to_numpy_shapes_and_scaling():
    batch = torch.full((2, 1, 3, 4), 255, dtype=torch.uint8)
    out = images_to_numpy(batch)
    assert out.shape == (2, 3, 4, 1) and out.dtype == np.float32 and float(out.max()) == 1.0
    assert images_to_numpy(torch.rand(3, 5, 6)).shape == (1, 5, 6, 3)  # one (C, H, W) image
    assert images_to_numpy(np.zeros((4, 5, 6), np.float32)).shape == (4, 5, 6, 1)  # (N, H, W) grayscale
    spread = images_to_numpy(torch.tensor([[[[-2.0, 2.0]]]]), normalize=True)
    assert spread.ravel().tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="HWC.*permute"):
        images_to_numpy(torch.rand(2, 8, 8, 3))
