"""A folder of images decoded once into a uint8 cache, then memory-mapped.

The cache of a folder at one side is three files in the cache folder (`cache_dir`: the run's
`--image-cache DIR`, else $WGANGP_FAST_CACHE, else $XDG_CACHE_HOME/wgangp_fast/images, else
~/.cache/wgangp_fast/images), named <folder>-<side>-<key>:
- .npy: the pixels [N, C, S, S] uint8, a plain .npy (read with allow_pickle=False, memory-mapped);
- .labels.npy: the class of each image (ImageFolder layout only);
- .json: what was decoded (the folder, the class names, the notes), written last: a cache
  without it is unfinished and is not used.
The key is a SHA-256 of the sorted relative paths of the image files with their sizes and
modification times, the side and the cache format: a file added, removed, replaced or touched
gives a new key, so a stale cache is never read. Building a new cache for a folder and side
removes that folder's older caches at the same side.

Every header is read and checked (pixel limit, readability) before the first file is decoded;
files are decoded by `workers` threads (torchvision's decoders release the GIL).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import time
from typing import Callable, List, Optional

import numpy as np

from .folders import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageFileError,
    decode_file,
    describe_sizes,
    fit,
    list_image_folder,
    read_header,
    require_torchvision,
)
from .pixels import UInt8ImageDataset

__all__ = ["CACHE_FORMAT", "default_cache_dir", "folder_key", "load_image_folder"]

CACHE_FORMAT = 1
# files per decoding task: few enough tasks that their bookkeeping stays small for 200k files
_CHUNK = 256


def default_cache_dir() -> str:
    explicit = os.environ.get("WGANGP_FAST_CACHE")
    if explicit:
        return os.path.join(explicit, "images")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "wgangp_fast", "images")


def folder_key(root: str, files: List[str], image_size: Optional[int],
               class_names: Optional[List[str]]) -> str:
    """The SHA-256 of what the cache's content depends on."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": CACHE_FORMAT, "image_size": image_size,
                         "classes": class_names}).encode())
    for rel in files:
        try:
            st = os.stat(os.path.join(root, rel))
        except OSError as exc:
            raise ImageFileError(f"{os.path.join(root, rel)}: cannot be read "
                                 f"({exc.strerror or exc})") from None
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _stem(root: str, image_size: Optional[int], key: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(os.path.abspath(root))) or "images"
    return f"{name}-{image_size or 'native'}-{key[:20]}"


def _open(base: str, meta: dict) -> Optional[UInt8ImageDataset]:
    """The finished cache at `base`, or None where it is missing or does not match its
    description."""
    try:
        pixels = np.load(base + ".npy", mmap_mode="r", allow_pickle=False)
        labels = (np.load(base + ".labels.npy", allow_pickle=False)
                  if meta.get("class_names") is not None else None)
    except (OSError, ValueError):
        return None
    if pixels.dtype != np.uint8 or list(pixels.shape) != meta.get("shape"):
        return None
    return UInt8ImageDataset(meta["name"], pixels, labels, meta.get("class_names"),
                             meta.get("notes", []))


def _remove_older(cache_dir: str, source: str, image_size, keep: str) -> None:
    for entry in os.listdir(cache_dir):
        if not entry.endswith(".json") or entry == os.path.basename(keep) + ".json":
            continue
        path = os.path.join(cache_dir, entry)
        try:
            with open(path) as f:
                meta = json.load(f)
        except (OSError, ValueError):
            continue
        if meta.get("source") == source and meta.get("image_size") == image_size:
            stem = path[:-len(".json")]
            for suffix in (".json", ".npy", ".labels.npy"):
                try:
                    os.remove(stem + suffix)
                except OSError:
                    pass


def load_image_folder(root: str, image_size: Optional[int] = None, *,
                      cache_dir: Optional[str] = None,
                      max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, workers: int = 0,
                      log: Optional[Callable[[str], None]] = None) -> UInt8ImageDataset:
    """The images of `root` (any image files below it, or ImageFolder's class subfolders) at
    `image_size` x `image_size` (shorter side resized, centre cropped; None: the images' own
    size, which must then be the same for all), as a memory-mapped uint8 dataset, decoded
    into the cache on first use. `workers`: decoding threads (0: one per core). `log` gets a
    line when a cache is built."""
    require_torchvision("reading a folder of images (--images DIR)")
    listing = list_image_folder(root)
    cache_dir = cache_dir or default_cache_dir()
    key = folder_key(root, listing.files, image_size, listing.class_names)
    base = os.path.join(cache_dir, _stem(root, image_size, key))
    try:
        with open(base + ".json") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        meta = None
    if meta is not None and meta.get("format") == CACHE_FORMAT:
        cached = _open(base, meta)
        if cached is not None:
            return cached

    paths = [os.path.join(root, rel) for rel in listing.files]
    headers = [read_header(p, max_pixels) for p in paths]  # all of them before any decoding
    colour = [h.colour for h in headers]
    channels = 3 if any(colour) else 1
    notes = []
    grey = len(colour) - sum(colour)
    if channels == 3 and grey:
        example = listing.files[colour.index(False)]
        notes.append(f"converted {grey} grey-scale image{'s' if grey > 1 else ''} of "
                     f"{len(paths)} to RGB (e.g. {example}), as the others have colour")
    if listing.ignored:
        notes.append(f"ignored {len(listing.ignored)} file{'s' if len(listing.ignored) > 1 else ''}"
                     f" without an image extension (e.g. {listing.ignored[0]})")
    if image_size is None:
        sizes = [(h.width, h.height) for h in headers]
        if len(set(sizes)) > 1:
            raise ValueError(f"{root}: the images have different sizes ("
                             f"{describe_sizes(sizes, listing.files)}); pass --image-size S to "
                             f"resize and centre-crop them all to S x S")
        width, height = sizes[0]
    else:
        width = height = int(image_size)
    shape = (len(paths), channels, height, width)

    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{base}.tmp{os.getpid()}"
    start = time.perf_counter()
    try:
        out = np.lib.format.open_memmap(tmp + ".npy", mode="w+", dtype=np.uint8, shape=shape)

        def decode(first: int, into: np.ndarray) -> None:
            for i in range(first, min(first + _CHUNK, len(paths))):
                into[i] = fit(decode_file(paths[i], headers[i], channels), image_size).numpy()

        n_workers = workers or os.cpu_count() or 1
        chunks = range(0, len(paths), _CHUNK)
        if n_workers == 1:
            for first in chunks:
                decode(first, out)
        else:
            pool = concurrent.futures.ThreadPoolExecutor(n_workers)
            try:
                for future in [pool.submit(decode, first, out) for first in chunks]:
                    future.result()  # the first failure, in file order
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        out.flush()
        # unmapped before the cache is mapped again to be read: two maps of one file would
        # count its pages twice in the process's resident memory
        del out
        if listing.labels is not None:
            np.save(tmp + ".labels.npy", listing.labels, allow_pickle=False)
        seconds = time.perf_counter() - start
        name = os.path.basename(os.path.normpath(os.path.abspath(root))) or "images"
        meta = {"format": CACHE_FORMAT, "name": name, "source": os.path.abspath(root),
                "image_size": image_size, "shape": list(shape),
                "class_names": listing.class_names, "notes": notes,
                "decode_seconds": round(seconds, 3), "workers": n_workers}
        with open(tmp + ".json", "w") as f:
            json.dump(meta, f)
        os.replace(tmp + ".npy", base + ".npy")
        if listing.labels is not None:
            os.replace(tmp + ".labels.npy", base + ".labels.npy")
        os.replace(tmp + ".json", base + ".json")  # last: the cache is complete
    finally:
        for suffix in (".npy", ".labels.npy", ".json"):
            if os.path.exists(tmp + suffix):
                os.remove(tmp + suffix)
    _remove_older(cache_dir, os.path.abspath(root), image_size, base)
    if log is not None:
        log(f"decoded {len(paths)} images ({width}x{height}, {channels} channel"
            f"{'s' if channels > 1 else ''}) in {seconds:.1f} s with {n_workers} thread"
            f"{'s' if n_workers > 1 else ''} into the cache {base}.npy")
    dataset = _open(base, meta)
    if dataset is None:
        raise OSError(f"{base}.npy: the cache just written cannot be read back")
    return dataset
