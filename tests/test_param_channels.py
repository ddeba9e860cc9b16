"""Models that read other than 3 channels (issue 28, item 12): a grayscale model, a 4-channel RGB+NIR model, a
2-channel one; colour decorrelation only where the user says the channels are RGB; saving what they render."""
from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

import lucent_dsl as ld
from lucent_dsl import param
from lucent_dsl.errors import InvalidArgumentError
from lucent_dsl.io import RECIPE_KEY, read_metadata
from lucent_dsl.param._common import lucid_matrix
from lucent_dsl.renderer.result import UNREPLAYABLE_KEY
from lucent_dsl.transforms import composite


def model_reading(channels: int) -> nn.Module:
    torch.manual_seed(channels)
    return ld.with_info(nn.Sequential(nn.Conv2d(channels, 4, 3), nn.ReLU()), ld.ModelInfo(channels=channels))


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_a_model_that_reads_c_channels_renders_c_channel_images_and_saves_them(channels, tmp_path):
    r = ld.render(ld.channel("0", 1), model_reading(channels), size=12, steps=2, progress=False, seed=0)
    assert r.images.shape == (1, channels, 12, 12)
    r.save(tmp_path / "x.png")
    with Image.open(tmp_path / "x.png") as im:
        im.load()
        if channels == 1:
            assert im.mode == "L" and im.size == (12, 12)
            return
        assert im.mode == "RGB"  # never RGBA: a 4th model channel is not transparency
        tiles = (channels >= 3) + channels - 3 * (channels >= 3)  # the RGB tile, then one grey tile per channel
        assert im.width > tiles * 12 and im.height < 2 * 12 + 8
        pixels = torch.tensor(list(im.getdata()), dtype=torch.float32).view(im.height, im.width, 3)
    last = (r.images[0, -1] * 255).round()  # the last channel: the last tile, grey
    tile = pixels[2:14, -14:-2]
    assert torch.allclose(tile[..., 0], last, atol=1) and torch.equal(tile[..., 0], tile[..., 2])
    meta = read_metadata(tmp_path / "x.png")  # the record is written as for any render
    assert RECIPE_KEY in meta or UNREPLAYABLE_KEY in meta


def test_an_alpha_render_still_saves_rgba(tmp_path):
    r = ld.render(ld.channel("0", 1) - 0.1 * ld.opacity(), model_reading(3), size=8, steps=1, progress=False,
                  param=param.alpha(8), transforms=[composite()])
    r.save(tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as im:
        assert im.mode == "RGBA"


def test_decorrelate_rgb_mixes_channels_0_to_2_only():
    g = torch.Generator().manual_seed(0)
    for make in (param.fft, param.pixel):
        p4 = make((8, 6), batch=2, channels=4, decorrelate="rgb")
        leaves = p4.init(g)
        (key,) = leaves
        four = p4.to_image(leaves)
        rgb = make((8, 6), batch=2, channels=3).to_image({key: leaves[key][:, :3]})  # Lucid's matrix
        nir = make((8, 6), batch=2, channels=1, decorrelate=False).to_image({key: leaves[key][:, 3:]})
        torch.testing.assert_close(four[:, :3], rgb)
        torch.testing.assert_close(four[:, 3:], nir)
    m = torch.block_diag(lucid_matrix(), torch.eye(2, dtype=torch.float64))
    a = param.pixel(4, channels=5, decorrelate="rgb").to_image({"pixels": torch.ones(1, 5, 4, 4)})
    b = param.pixel(4, channels=5, decorrelate=m).to_image({"pixels": torch.ones(1, 5, 4, 4)})
    torch.testing.assert_close(a, b)
    with pytest.raises(InvalidArgumentError, match="RGB in channels 0-2"):
        param.fft(8, channels=1, decorrelate="rgb")
