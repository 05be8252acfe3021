"""Images held as floats: scikit-learn's bundled digits and local .npy/.npz image arrays, scaled
to [-1, 1] in model space. (Folders of image files: folders.py and cache.py; MNIST, Fashion-MNIST
and CIFAR-10: standard.py.)"""

from __future__ import annotations

import numbers
import os
from typing import Tuple

import numpy as np
import torch
from torch import Tensor

from .base import TensorDataset
from .folders import IMAGE_EXTENSIONS

__all__ = ["load_digits", "load_image_array"]


def _to_unit_range(arr: np.ndarray, low: float, high: float) -> Tensor:
    if not high > low:
        raise ValueError(f"all pixels have the same value ({low}): nothing to learn")
    return torch.from_numpy(((arr.astype(np.float32) - low) / (high - low)) * 2.0 - 1.0)


def _resize(images: Tensor, image_size: int | None, name: str) -> Tensor:
    if image_size is None or images.shape[-1] == image_size == images.shape[-2]:
        return images
    if (isinstance(image_size, (bool, np.bool_)) or not isinstance(image_size, numbers.Integral)
            or image_size < 1):
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    image_size = int(image_size)
    # Bilinear resize: how 28x28 MNIST or 8x8 digits reach a convolutional model's 32x32 input.
    out = torch.nn.functional.interpolate(images, size=(image_size, image_size), mode="bilinear",
                                          align_corners=False)
    return out.clamp_(-1.0, 1.0)


def load_digits(image_size: int | None = None) -> TensorDataset:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16) scaled to [-1, 1], [1, 8, 8].

    image_size (e.g. 32) resizes them bilinearly for convolutional models.
    """
    from sklearn.datasets import load_digits as _sk_digits

    bunch = _sk_digits()
    images = _to_unit_range(bunch.images, 0.0, 16.0).unsqueeze(1)
    return TensorDataset("digits", _resize(images, image_size, "digits"), "image", 0.0, 16.0,
                         labels=bunch.target, class_names=[str(k) for k in range(10)])


def _array_images(arr: np.ndarray, path: str) -> Tuple[np.ndarray, float, float]:
    """[N, H, W], [N, C, H, W] or [N, H, W, C] (C in 1, 3, 4) -> [N, C, H, W] and value range."""
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{path}: expected a numeric image array, got dtype {arr.dtype}")
    channels = (1, 3, 4)
    if arr.ndim == 3:
        # the plots and the models would take it as N narrow images; refused before training
        # rather than drawn wrongly after it
        if arr.shape[2] in channels and arr.shape[2] != arr.shape[1]:
            raise ValueError(f"{path}: shape {list(arr.shape)} reads as {arr.shape[0]} grayscale "
                             f"images of {arr.shape[1]}x{arr.shape[2]} pixels; if it is one "
                             f"colour image [H, W, C], save it as [1, H, W, C] (arr[None]), and "
                             f"a set of images as [N, H, W], [N, C, H, W] or [N, H, W, C]")
        arr = arr[:, None]
    elif arr.ndim == 4:
        if arr.shape[1] not in channels:
            if arr.shape[3] not in channels:
                raise ValueError(f"{path}: a 4-D image array needs its channels (1, 3 or 4) on "
                                 f"axis 1 ([N, C, H, W]) or axis 3 ([N, H, W, C]), got shape "
                                 f"{list(arr.shape)}; reorder the axes (e.g. with "
                                 f"numpy.moveaxis) or save one channel per image")
            arr = arr.transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"{path}: expected images of shape [N, H, W], [N, C, H, W] or "
                         f"[N, H, W, C], got shape {list(arr.shape)}")
    if arr.shape[0] == 0:
        raise ValueError(f"{path}: the array holds no images (shape {list(arr.shape)})")
    arr = np.ascontiguousarray(arr)
    if not np.isfinite(arr.astype(np.float64, copy=False)).all():
        raise ValueError(f"{path}: the array contains NaN or infinite values")
    if arr.dtype == np.uint8:
        return arr, 0.0, 255.0
    return arr, float(arr.min()), float(arr.max())


def load_image_array(path: str, key: str | None = None,
                     image_size: int | None = None) -> TensorDataset:
    """Images from a local .npy or .npz file ([N, H, W], [N, C, H, W] or [N, H, W, C]).

    uint8 arrays are read as 0..255; float arrays are scaled from their own min..max to [-1, 1].
    In a .npz the array is `key`, else the only array, else one named x, images, data or arr_0;
    a key with a .npy file is an error (it holds one unnamed array).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image array not found: {path}")
    if path.lower().endswith(IMAGE_EXTENSIONS):
        raise ValueError(f"{path} is one image file; --images takes a folder of images (put it "
                         f"in a folder, with the others) or a .npy/.npz array")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read as a .npy/.npz array ({exc})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            names = list(loaded.files)
            if key is not None:
                if key not in names:
                    raise ValueError(f"{path}: no array named {key!r} (found {names})")
                chosen = key
            elif len(names) == 1:
                chosen = names[0]
            else:
                chosen = next((k for k in ("x", "images", "data", "arr_0") if k in names), None)
                if chosen is None:
                    raise ValueError(f"{path}: holds several arrays {names}; say which with key "
                                     f"(--npz-key)")
            arr = loaded[chosen]
    else:
        if key is not None:
            raise ValueError(f"{path} is a .npy file, which holds one unnamed array: key {key!r} "
                             f"(--npz-key) names an array of a .npz file; drop --npz-key, or "
                             f"pass the .npz file")
        arr = loaded
    arr, low, high = _array_images(arr, path)
    images = _resize(_to_unit_range(arr, low, high), image_size, path)
    return TensorDataset(os.path.basename(path), images, "image", low, high)
