from __future__ import annotations

import json
import math
import os
import stat

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from PIL import Image

from lucent_dsl.errors import ImageError, InvalidArgumentError
from lucent_dsl.io.files import (
    RECIPE_KEY,
    atomic_write,
    load_image,
    make_grid,
    read_png_metadata,
    save_gif,
    save_png,
    to_pil,
)


def _uint8_image(c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A (C, H, W) float tensor whose values are exactly k / 255."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (c, h, w), generator=g, dtype=torch.uint8).float() / 255


# --- PNG round-trip -----------------------------------------------------------------------


@pytest.mark.parametrize("c", [1, 3, 4])
@given(h=st.integers(1, 12), w=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_png_roundtrip_is_exact(tmp_path_factory, c, h, w, seed):
    tmp_path = tmp_path_factory.mktemp("png")  # hypothesis reuses function-scoped fixtures
    x = _uint8_image(c, h, w, seed)
    save_png(tmp_path / "x.png", x[None])
    y = load_image(tmp_path / "x.png", channels=c)
    assert y.shape == (1, c, h, w) and y.dtype == torch.float32
    assert torch.equal(y[0], x)


def test_to_pil_modes_and_clamping():
    ims = to_pil(torch.tensor([-1.0, 0.5, 2.0, float("nan")]).view(1, 1, 2, 2))
    assert [im.mode for im in ims] == ["L"]
    assert np.asarray(ims[0]).tolist() == [[0, 128], [255, 0]]
    assert [im.mode for im in to_pil(torch.zeros(3, 2, 2))] == ["RGB"]
    assert [im.mode for im in to_pil(torch.zeros(2, 4, 2, 2))] == ["RGBA", "RGBA"]
    with pytest.raises(ImageError, match=r"\(1, 2, 2, 2\)"):
        to_pil(torch.zeros(1, 2, 2, 2))


# --- grids --------------------------------------------------------------------------------


@given(
    b=st.integers(1, 12),
    ncol=st.none() | st.integers(1, 15),
    pad=st.integers(0, 5),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
)
def test_grid_shape_and_tile_placement(b, ncol, pad, h, w):
    x = torch.stack([_uint8_image(3, h, w, seed=i) for i in range(b)])
    grid = make_grid(x, ncol=ncol, pad=pad, background=7)
    cols = min(ncol or math.ceil(math.sqrt(b)), b)
    rows = math.ceil(b / cols)
    assert grid.size == (cols * w + (cols + 1) * pad, rows * h + (rows + 1) * pad)
    arr = np.asarray(grid)
    covered = np.zeros(arr.shape[:2], bool)
    for i, tile in enumerate(to_pil(x)):
        top, left = pad + (i // cols) * (h + pad), pad + (i % cols) * (w + pad)
        np.testing.assert_array_equal(arr[top : top + h, left : left + w], np.asarray(tile))
        covered[top : top + h, left : left + w] = True
    assert (arr[~covered] == 7).all()


def test_grid_default_is_near_square_and_accepts_pil_lists():
    tiles = to_pil(torch.rand(10, 1, 4, 6))
    grid = make_grid(tiles, pad=0)
    assert grid.mode == "L" and grid.size == (4 * 6, 3 * 4)
    mixed = make_grid([tiles[0], Image.new("RGBA", (6, 4))], pad=1)
    assert mixed.mode == "RGBA"


@pytest.mark.parametrize("mode_c", [1, 3, 4])
def test_labels_change_pixels_only_in_label_strip(mode_c):
    b, h, w, pad, cols = 5, 10, 40, 3, 3
    x = torch.rand(b, mode_c, h, w)
    labels = ["features.14:10", "b", "a very long label that cannot fit", "0", "x:1"]
    blank = np.asarray(make_grid(x, ncol=cols, pad=pad, labels=[""] * b)).astype(int)
    drawn = np.asarray(make_grid(x, ncol=cols, pad=pad, labels=labels)).astype(int)
    assert blank.shape == drawn.shape
    rows = math.ceil(b / cols)
    strip = (blank.shape[0] - (rows + 1) * pad) // rows - h
    assert strip > 0
    allowed = np.zeros(blank.shape[:2], bool)
    for i in range(b):
        top, left = pad + (i // cols) * (h + strip + pad), pad + (i % cols) * (w + pad)
        allowed[top + h : top + h + strip, left : left + w] = True
    changed = blank != drawn
    changed = changed.any(-1) if changed.ndim == 3 else changed
    assert changed.any()
    assert not changed[~allowed].any()
    if mode_c == 4:  # text is opaque, not drawn with alpha 0
        assert (drawn[changed][:, 3] == 255).all()


def test_grid_argument_errors():
    with pytest.raises(InvalidArgumentError, match="2 labels for 3 images"):
        make_grid(torch.rand(3, 3, 4, 4), labels=["a", "b"])
    with pytest.raises(InvalidArgumentError):
        make_grid([])
    with pytest.raises(InvalidArgumentError):
        make_grid(torch.rand(3, 3, 4, 4), ncol=0)


# --- metadata -----------------------------------------------------------------------------

_keys = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=79)


@given(meta=st.dictionaries(_keys, st.text(), max_size=4), long=st.booleans())
def test_metadata_roundtrip(tmp_path_factory, meta, long):
    tmp_path = tmp_path_factory.mktemp("meta")
    if long:  # exercise the compressed chunk path
        meta = {k: v * 200 + "é" * 1500 for k, v in meta.items()}
    path = tmp_path / "m.png"
    save_png(path, torch.rand(1, 3, 4, 4), metadata=meta)
    assert read_png_metadata(path) == meta


def test_recipe_json_survives_roundtrip(tmp_path):
    recipe = {"objective": "channel('features.14', 10) - 0.5 * diversity('x')", "seed": 0, "note": "ünï ✓ 日本"}
    save_png(tmp_path / "r.png", to_pil(torch.rand(2, 3, 4, 4)), metadata={RECIPE_KEY: json.dumps(recipe)})
    assert json.loads(read_png_metadata(tmp_path / "r.png")[RECIPE_KEY]) == recipe


@pytest.mark.parametrize("key", ["", "x" * 80, "ключ", "a\nb"])
def test_bad_metadata_key_is_rejected(tmp_path, key):
    with pytest.raises(InvalidArgumentError, match="metadata key"):
        save_png(tmp_path / "k.png", torch.rand(3, 4, 4), metadata={key: "v"})
    assert not (tmp_path / "k.png").exists()


def test_read_metadata_of_non_png(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.gif")
    with pytest.raises(ImageError, match="not a PNG"):
        read_png_metadata(tmp_path / "a.gif")


def test_save_png_batch_becomes_grid(tmp_path):
    save_png(tmp_path / "g.png", torch.rand(4, 3, 5, 5))
    assert load_image(tmp_path / "g.png").shape == (1, 3, 2 * 5 + 3 * 2, 2 * 5 + 3 * 2)


# --- GIF ----------------------------------------------------------------------------------


@given(n=st.integers(1, 6), b=st.integers(1, 3))
def test_gif_frame_count(tmp_path_factory, n, b):
    tmp_path = tmp_path_factory.mktemp("gif")
    frames = [torch.full((b, 3, 6, 6), i / 6) for i in range(n)]  # distinct, so none are merged
    save_gif(tmp_path / "a.gif", frames, duration_ms=40)
    with Image.open(tmp_path / "a.gif") as im:
        assert im.n_frames == n
        assert im.size == ((6, 6) if b == 1 else make_grid(frames[0]).size)
        if n > 1:
            assert im.info.get("loop") == 0


def test_gif_rejects_mixed_sizes_and_empty(tmp_path):
    with pytest.raises(InvalidArgumentError, match="one size"):
        save_gif(tmp_path / "a.gif", [torch.rand(3, 4, 4), torch.rand(3, 5, 4)])
    with pytest.raises(InvalidArgumentError):
        save_gif(tmp_path / "a.gif", [])
    assert list(tmp_path.iterdir()) == []


# --- atomic writes ------------------------------------------------------------------------


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_atomic_write_keeps_old_file_on_error(tmp_path, exc):
    path = tmp_path / "out.png"
    path.write_bytes(b"old contents")
    with pytest.raises(exc), atomic_write(path) as f:
        f.write(b"new, half written")
        f.flush()
        assert len(list(tmp_path.iterdir())) == 2  # the temp file is really there
        raise exc()
    assert path.read_bytes() == b"old contents"
    assert list(tmp_path.iterdir()) == [path]


def test_atomic_write_error_without_old_file_leaves_nothing(tmp_path):
    with pytest.raises(ValueError), atomic_write(tmp_path / "new.txt", "w") as f:
        f.write("x")
        raise ValueError
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_creates_dirs_and_keeps_normal_permissions(tmp_path):
    path = tmp_path / "a" / "b" / "out.txt"
    with atomic_write(path, "w") as f:
        f.write("héllo")
    assert path.read_text(encoding="utf-8") == "héllo"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    path.chmod(0o640)
    with atomic_write(path) as f:
        f.write(b"second")
    assert path.read_bytes() == b"second"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]


def test_atomic_write_rejects_read_mode(tmp_path):
    with pytest.raises(InvalidArgumentError), atomic_write(tmp_path / "x", "rb"):
        pass


# --- load_image ---------------------------------------------------------------------------


def test_load_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(ImageError, match="nope.png"):
        load_image(path)
    with pytest.raises(ImageError, match="nope.png"):
        load_image(str(path))


def test_load_corrupt_files(tmp_path):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not a png at all \x00\x01\x02" * 10)
    with pytest.raises(ImageError, match="garbage.png"):
        load_image(garbage)
    save_png(tmp_path / "ok.png", torch.rand(3, 32, 32))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes((tmp_path / "ok.png").read_bytes()[:100])
    with pytest.raises(ImageError, match="truncated.png"):
        load_image(truncated)


@pytest.mark.parametrize("shape", [(4,), (2, 3, 5), (4, 4, 2), (1, 4, 4, 3), ()])
def test_load_bad_array_shape(shape):
    with pytest.raises(ImageError, match=re_escape_shape(shape)):
        load_image(np.zeros(shape, np.uint8))


def re_escape_shape(shape: tuple[int, ...]) -> str:
    import re

    return re.escape(str(shape))


@pytest.mark.parametrize(
    "arr", [np.zeros((4, 4), np.int64), np.full((4, 4, 3), 255.0), np.full((4, 4), np.nan, np.float32)]
)
def test_load_bad_array_values(arr):
    with pytest.raises(ImageError, match="accepted|expected"):
        load_image(arr)


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (5, 4, 4), (4,)])
def test_load_bad_tensor_shape(shape):
    with pytest.raises(ImageError, match=re_escape_shape(shape)):
        load_image(torch.zeros(shape))


def test_load_unsupported_type_and_bad_arguments():
    with pytest.raises(ImageError, match="list"):
        load_image([[0, 1]])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        load_image(np.zeros((4, 4)), channels=2)
    with pytest.raises(InvalidArgumentError):
        load_image(np.zeros((4, 4)), size=(0, 3))


def test_load_sources_agree():
    arr = (np.arange(4 * 5 * 3) % 256).astype(np.uint8).reshape(4, 5, 3)
    expected = torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255
    for source in (arr, Image.fromarray(arr), expected[0], expected, arr.astype(np.float64) / 255):
        assert torch.allclose(load_image(source), expected, atol=1e-6)
    assert torch.equal(load_image(torch.from_numpy(arr).permute(2, 0, 1)), expected)  # uint8 tensor


def test_channels_conversion():
    rgba = np.random.default_rng(0).integers(0, 256, (6, 7, 4), dtype=np.uint8)
    rgb = rgba[..., :3]
    x4 = load_image(rgba, channels=4)
    assert torch.equal(load_image(rgba, channels=3), x4[:, :3])  # alpha dropped
    assert torch.equal(load_image(rgb, channels=4)[:, 3], torch.ones(1, 6, 7))  # opaque alpha added
    grey = load_image(rgb, channels=1)
    assert grey.shape == (1, 1, 6, 7)
    pil_grey = torch.from_numpy(np.array(Image.fromarray(rgb).convert("L"))).float() / 255
    assert (grey[0, 0] - pil_grey).abs().max() <= 1 / 255 + 1e-6  # same luma weights as PIL
    assert torch.equal(load_image(rgba, channels=1), grey)
    g = load_image(rgb[..., 0], channels=3)
    assert torch.equal(g[:, 0], g[:, 1]) and torch.equal(g[:, 1], g[:, 2])
    assert torch.equal(load_image(rgb[..., :1], channels=1), load_image(rgb[..., 0], channels=1))


def test_channels_from_other_pil_modes(tmp_path):
    palette = Image.fromarray(np.zeros((4, 4, 3), np.uint8)).convert("P")
    assert load_image(palette).shape == (1, 3, 4, 4)
    assert load_image(Image.new("1", (3, 2), 1), channels=1).eq(1).all()
    deep = np.array([[0, 65535], [32768, 1]], np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    y = load_image(tmp_path / "deep.png", channels=1)
    assert torch.allclose(y[0, 0], torch.from_numpy(deep.astype(np.float32) / 65535))


@pytest.mark.parametrize("size, hw", [(8, (8, 8)), ((3, 10), (3, 10))])
def test_load_resizes(size, hw):
    x = load_image(np.full((20, 30, 3), 0.25, np.float32), size=size)
    assert x.shape == (1, 3, *hw)
    assert torch.allclose(x, torch.full_like(x, 0.25))


# --- issue 13: the umask, metadata without decoding, formats by extension, image checks ----------------

import zlib  # noqa: E402
from unittest import mock  # noqa: E402

from lucent_dsl.io import files as lio, metadata as meta_lib  # noqa: E402
from lucent_dsl.io.files import image_format, read_metadata, save_image  # noqa: E402


def test_atomic_write_never_touches_the_umask_and_honours_it(tmp_path):
    old = os.umask(0o027)
    try:
        with mock.patch.object(os, "umask", side_effect=AssertionError("atomic_write changed the umask")):
            with atomic_write(tmp_path / "a.txt", "w") as f:
                f.write("x")
            save_png(tmp_path / "b.png", torch.rand(3, 2, 2))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "b.png").stat().st_mode) == 0o640


def test_zoo_writes_through_the_one_atomic_write(tmp_path):
    from lucent_dsl import zoo_weights

    with mock.patch.object(os, "umask", side_effect=AssertionError("zoo changed the umask")):
        zoo_weights._write_atomic(tmp_path / "w" / "weights.pt", b"\x00weights")
    mask = os.umask(0)
    os.umask(mask)
    path = tmp_path / "w" / "weights.pt"
    assert path.read_bytes() == b"\x00weights" and stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in path.parent.iterdir()] == ["weights.pt"]


@given(meta=st.dictionaries(_keys, st.text(), max_size=4), long=st.booleans())
def test_png_text_reader_agrees_with_pil(tmp_path_factory, meta, long):
    path = tmp_path_factory.mktemp("agree") / "m.png"
    if long:
        meta = {k: v * 300 + "ü" for k, v in meta.items()}
    save_png(path, torch.rand(3, 5, 5), metadata=meta)
    with Image.open(path) as im:
        im.load()
        pil = {str(k): str(v) for k, v in im.text.items()}
    assert meta_lib.png_text(path) == pil == meta
    assert meta_lib.png_text(path, verify=True) == meta


@pytest.mark.parametrize("cut", [8, 40, -13, -1])
def test_a_cut_or_damaged_png_is_reported_as_damaged(tmp_path, cut):
    save_png(tmp_path / "ok.png", torch.rand(3, 16, 16), metadata={RECIPE_KEY: "{}"})
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:cut])
    with pytest.raises(ImageError, match="cut.png.*damaged PNG"):
        read_png_metadata(tmp_path / "cut.png")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    (tmp_path / "flip.png").write_bytes(bytes(flipped))
    with pytest.raises(ImageError, match="checksum"):
        read_png_metadata(tmp_path / "flip.png", verify=True)


def test_a_zip_bomb_in_a_text_chunk_is_not_inflated(tmp_path, monkeypatch):
    monkeypatch.setattr(meta_lib, "MAX_TEXT_BYTES", 1000)
    save_png(tmp_path / "z.png", torch.rand(3, 2, 2), metadata={"k": "a" * 5000})  # zTXt: 5000 bytes inflated
    with pytest.raises(ImageError, match="larger than 1000 bytes"):
        read_png_metadata(tmp_path / "z.png")


@pytest.mark.parametrize("suffix, fmt", [(".png", "PNG"), (".jpg", "JPEG"), (".jpeg", "JPEG"), (".webp", "WEBP")])
def test_save_image_writes_the_format_its_extension_names_with_the_metadata(tmp_path, suffix, fmt):
    x = _uint8_image(3, 12, 10)
    meta = {RECIPE_KEY: json.dumps({"objective": "channel('a', 1)", "note": "ünï"}), "lucent_dsl.score": "1.5"}
    path = tmp_path / f"out{suffix.upper()}"
    save_image(path, x, metadata=meta)
    with Image.open(path) as im:
        assert im.format == fmt and im.size == (10, 12)
    assert read_metadata(path) == meta
    back = load_image(path)
    assert (back[0] - x).abs().max() <= (0 if fmt != "JPEG" else 0.25)  # PNG and WebP are lossless
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.parametrize("name", ["a.bmp", "a.gif", "a", "a.tiff"])
def test_save_image_refuses_formats_it_does_not_write(tmp_path, name):
    with pytest.raises(InvalidArgumentError, match=".png, .jpg"):
        image_format(name)
    with pytest.raises(InvalidArgumentError):
        save_image(tmp_path / name, torch.rand(3, 4, 4))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InvalidArgumentError, match="no alpha"):
        save_image(tmp_path / "a.jpg", torch.rand(4, 4, 4))


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [8001, 13000, 50000])
def test_too_large_images_are_refused_before_decoding(tmp_path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_claiming(side, side))  # a few hundred bytes
    words = rf"{side} x {side} = .* million pixels" if side < 20000 else r"too large \(Image size \(2500000000 pixels"
    with pytest.raises(ImageError, match=words + ".*MAX_IMAGE_PIXELS"):
        load_image(path)
    with pytest.raises(ImageError, match="million pixels"):
        lio.image_size(path)


def test_image_limit_is_a_setting_and_pil_errors_become_image_errors(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("L", (300, 200)).save(path)
    monkeypatch.setattr(lio, "MAX_IMAGE_PIXELS", 300 * 200 - 1)
    with pytest.raises(ImageError, match="300 x 200"):
        load_image(path)
    monkeypatch.setattr(lio, "MAX_IMAGE_PIXELS", 300 * 200)
    assert load_image(path).shape == (1, 3, 200, 300)
    monkeypatch.setattr(lio, "MAX_IMAGE_PIXELS", 10**12)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL's own bomb check then fires: an ImageError
    with pytest.raises(ImageError, match="too large"):
        load_image(path)


@pytest.mark.parametrize("values, expected", [([[0, 65535], [32768, 1]], "ok"), ([[0, 70000], [5, 1]], "refused"),
                                              ([[-5, 3], [0, 1]], "refused")])
def test_32_bit_integer_tiffs_are_read_by_their_range_or_refused(tmp_path, values, expected):
    arr = np.array(values, np.int32)
    Image.fromarray(arr).save(tmp_path / "deep.tif")
    with Image.open(tmp_path / "deep.tif") as im:
        assert im.mode == "I"
    if expected == "ok":
        y = load_image(tmp_path / "deep.tif", channels=1)
        assert torch.allclose(y[0, 0], torch.from_numpy(arr.astype(np.float32) / 65535))
        assert not bool((y == 1).all())  # the old path clipped to 255: all white
    else:
        with pytest.raises(ImageError, match=r"32-bit integer image with values in \[-?\d+, \d+\].*16 bits"):
            load_image(tmp_path / "deep.tif")
