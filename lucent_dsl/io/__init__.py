"""Every file format lucent_dsl reads or writes, and every write atomic.

Rooms: `files` (images in and out, the recipe key, checks before decoding), `grid` (tensors to labelled image
grids), `metadata` (reading PNG/JPEG/WebP metadata without decoding pixels), `atomic` (atomic writes; what a killed
writer left is removed), `tensors` (`.npy`/`.pt` files, read safely), `datasets` (image arrays from files to [0, 1]
by one rule; the fingerprint a resumed pass checks).

Example:
    >>> import torch
    >>> make_grid(torch.rand(5, 3, 8, 8), pad=2).size
    (32, 22)
"""
from .files import (
    IMAGE_FORMATS as IMAGE_FORMATS,
    MAX_IMAGE_PIXELS as MAX_IMAGE_PIXELS,
    RECIPE_KEY as RECIPE_KEY,
    ImageLike as ImageLike,
    atomic_write as atomic_write,
    check_image_size as check_image_size,
    image_format as image_format,
    image_size as image_size,
    load_image as load_image,
    read_metadata as read_metadata,
    read_png_metadata as read_png_metadata,
    save_gif as save_gif,
    save_image as save_image,
    save_png as save_png,
)
from .grid import make_grid as make_grid, to_pil as to_pil
