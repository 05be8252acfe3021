"""Folders of image files: finding them, reading their headers, decoding them.

A folder is either a set of images (any image files in it or below it: unlabelled) or, when it
holds no image files itself, ImageFolder's layout: one subfolder per class, the class names the
subfolders' names in sorted order, each class's images anywhere below its subfolder.

Before anything is decoded, every file's header is read (PNG and JPEG by their own few bytes,
other formats through Pillow's lazy open, which reads only the header): its size, whether it has
colour, and the pixel count it claims, held against `max_pixels` (a decompression bomb is a
small file whose header claims billions of pixels). Decoding then goes through torchvision.io
(PNG, JPEG, GIF, WebP), with Pillow for the formats it does not read (BMP, TIFF, ...); resizing
and cropping to the run's side through torchvision.transforms.v2. A file that cannot be read is
an `ImageFileError` naming it.
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "IMAGE_EXTENSIONS", "FolderListing", "ImageFileError",
           "ImageHeader", "decode_file", "list_image_folder", "read_header", "require_torchvision"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                    ".pgm", ".pbm", ".pnm", ".tga")
# 100 megapixels: above any camera's photo, and 300 MB decoded as RGB; Pillow's own warning
# threshold is 89 megapixels.
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000


class ImageFileError(ValueError):
    """An image file that cannot be used, with its path first in the message."""


def require_torchvision(what: str):
    """torchvision, or an ImportError naming the extra that installs it."""
    try:
        import torchvision  # noqa: F401
        from torchvision import io as tv_io  # noqa: F401
        from torchvision.transforms import v2  # noqa: F401
    except ImportError:
        raise ImportError(f"{what} needs torchvision, which is not installed: pip install "
                          f"'wgangp_fast[images]'") from None
    # torchvision 0.29 announces its decoders' move to TorchCodec at every call, from the
    # decoding threads too (where catch_warnings, which is not thread-safe, cannot hold it)
    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities "
                            "of TorchVision are deprecated", category=DeprecationWarning)
    return torchvision


@dataclass
class FolderListing:
    """The image files of a folder (paths relative to `root`, sorted) and their labels."""

    root: str
    files: List[str]
    labels: Optional[np.ndarray] = None
    class_names: Optional[List[str]] = None
    ignored: List[str] = field(default_factory=list)  # files without an image extension


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _walk(folder: str, root: str, ignored: List[str]) -> List[str]:
    """Image files below `folder`, relative to `root`, sorted; hidden entries skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            (found if _is_image(name) else ignored).append(rel)
    return found


def list_image_folder(root: str) -> FolderListing:
    """The image files of `root` and, in ImageFolder's layout, their labels."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder not found: {root}")
    entries = sorted(e for e in os.listdir(root) if not e.startswith("."))
    top_images = [e for e in entries if os.path.isfile(os.path.join(root, e)) and _is_image(e)]
    subfolders = [e for e in entries if os.path.isdir(os.path.join(root, e))]
    ignored: List[str] = []
    if top_images or not subfolders:
        files = _walk(root, root, ignored)
        if not files:
            raise ValueError(f"{root}: the folder holds no image files ({', '.join(IMAGE_EXTENSIONS[:4])}"
                             f", ...){' (only ' + str(len(ignored)) + ' other files)' if ignored else ''};"
                             f" nothing to train on")
        return FolderListing(root, files, ignored=ignored)
    files, labels, names = [], [], []
    for sub in subfolders:
        found = _walk(os.path.join(root, sub), root, ignored)
        if not found:
            raise ValueError(f"{os.path.join(root, sub)}: this class folder holds no image files; "
                             f"remove it or add its images (ImageFolder layout: one subfolder "
                             f"of images per class)")
        labels += [len(names)] * len(found)
        names.append(sub)
        files += found
    return FolderListing(root, files, np.asarray(labels, dtype=np.int64), names, ignored)


@dataclass(frozen=True)
class ImageHeader:
    width: int
    height: int
    colour: bool  # False: grey-scale (with or without alpha)
    format: str  # "png", "jpeg" or Pillow's format name


def _png_header(head: bytes, path: str) -> ImageHeader:
    if len(head) < 26 or head[12:16] != b"IHDR":
        raise ImageFileError(f"{path}: a PNG signature without its IHDR header: the file is "
                             f"truncated or corrupt")
    width, height = struct.unpack(">II", head[16:24])
    colour_type = head[25]
    if width == 0 or height == 0 or colour_type not in (0, 2, 3, 4, 6):
        raise ImageFileError(f"{path}: a PNG header with size {width}x{height} and colour type "
                             f"{colour_type}: the file is corrupt")
    return ImageHeader(width, height, colour_type in (2, 3, 6), "png")


# SOF markers: the frame header that holds the size (not DHT C4, JPG C8, DAC CC)
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_header(f, path: str) -> ImageHeader:
    f.seek(2)
    while True:
        byte = f.read(1)
        while byte == b"\xff":
            byte = f.read(1)
        if not byte:
            break
        marker = byte[0]
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            continue  # markers without a length
        if marker == 0xD9:
            break
        raw = f.read(2)
        if len(raw) < 2:
            break
        (length,) = struct.unpack(">H", raw)
        if marker in _JPEG_SOF:
            body = f.read(6)
            if len(body) < 6:
                break
            height, width = struct.unpack(">HH", body[1:5])
            components = body[5]
            if width == 0 or height == 0 or components not in (1, 3, 4):
                break
            return ImageHeader(width, height, components != 1, "jpeg")
        if length < 2:
            break
        f.seek(length - 2, os.SEEK_CUR)
    raise ImageFileError(f"{path}: a JPEG without a readable frame header (SOF): the file is "
                         f"truncated or corrupt")


_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")


def _pillow_header(path: str, max_pixels: int) -> ImageHeader:
    try:
        from PIL import Image
    except ImportError:
        raise ImageFileError(f"{path}: not a PNG or JPEG file, and Pillow, which reads the other "
                             f"formats, is not installed (pip install 'wgangp_fast[images]')"
                             ) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # reads the header only
                width, height = im.size
                mode, fmt = im.mode, (im.format or "unknown").lower()
    except Image.DecompressionBombError as exc:
        # Pillow's own refusal (above twice its Image.MAX_IMAGE_PIXELS), before decoding too
        raise ImageFileError(f"{path}: refused before decoding: {exc} (the run's limit is "
                             f"{max_pixels} pixels, --max-image-pixels)") from None
    except Exception as exc:
        raise ImageFileError(f"{path}: cannot be read as an image ({type(exc).__name__}: "
                             f"{exc})") from None
    return ImageHeader(width, height, mode not in _GREY_MODES, fmt)


def read_header(path: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> ImageHeader:
    """The size and colour of the image at `path` from its header alone; an ImageFileError when
    the header is unreadable or claims more than `max_pixels` pixels."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
            if head.startswith(b"\x89PNG\r\n\x1a\n"):
                header = _png_header(head, path)
            elif head.startswith(b"\xff\xd8"):
                header = _jpeg_header(f, path)
            else:
                header = None
    except OSError as exc:
        raise ImageFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if header is None:
        if not head:
            raise ImageFileError(f"{path}: the file is empty")
        header = _pillow_header(path, max_pixels)
    pixels = header.width * header.height
    if pixels > max_pixels:
        raise ImageFileError(f"{path}: its header claims {header.width}x{header.height} = "
                             f"{pixels} pixels, more than the limit of {max_pixels} "
                             f"(--max-image-pixels); refused before decoding (a decompression "
                             f"bomb, or raise the limit if the image is genuine)")
    return header


def decode_file(path: str, header: ImageHeader, channels: int):
    """The image at `path` as a uint8 tensor [channels, H, W] (grey-scale repeated to RGB, alpha
    dropped, 16-bit scaled to 8); an ImageFileError where it cannot be decoded."""
    import torch
    from torchvision import io as tv_io
    from torchvision.transforms import v2

    mode = tv_io.ImageReadMode.RGB if channels == 3 else tv_io.ImageReadMode.GRAY
    img = None
    error = None
    if header.format in ("png", "jpeg", "gif", "webp"):
        try:
            img = tv_io.decode_image(tv_io.read_file(path), mode=mode)
        except Exception as exc:  # torchvision raises RuntimeError with libpng's / libjpeg's text
            error = exc
    if img is None:
        try:
            img = _pillow_decode(path, channels)
        except Exception as exc:
            error = error or exc
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ImageFileError(f"{path}: cannot be decoded ({type(error).__name__}: "
                                 f"{first})") from None
    if img.dtype != torch.uint8:
        img = v2.functional.to_dtype(img, torch.uint8, scale=True)
    if tuple(img.shape[-2:]) != (header.height, header.width):
        raise ImageFileError(f"{path}: decodes to {img.shape[-1]}x{img.shape[-2]} pixels where "
                             f"its header says {header.width}x{header.height}: the file is "
                             f"corrupt")
    return img


def _pillow_decode(path: str, channels: int):
    import torch
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L", "I") and channels == 1:
            arr = (np.asarray(im, dtype=np.float64) / 257.0).round().clip(0, 255)
            arr = arr.astype(np.uint8)
        else:
            arr = np.asarray(im.convert("RGB" if channels == 3 else "L"))
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def fit(img, size: Optional[int]):
    """[C, H, W] uint8 -> [C, size, size]: the shorter side resized to `size` (antialiased),
    then the centre cropped (torchvision.transforms.v2), unless it already is that size."""
    from torchvision.transforms import v2

    if size is None or tuple(img.shape[-2:]) == (size, size):
        return img
    img = v2.functional.resize(img, [size], antialias=True)
    return v2.functional.center_crop(img, [size, size])


def describe_sizes(sizes: List[Tuple[int, int]], files: List[str]) -> str:
    """'64x48 (a.png), 32x32 (b.png)': two different sizes with an example file each."""
    seen = {}
    for s, f in zip(sizes, files):
        seen.setdefault(s, f)
        if len(seen) == 2:
            break
    return ", ".join(f"{w}x{h} ({f})" for (w, h), f in seen.items())
