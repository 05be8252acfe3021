"""Files the data tests write: a folder of PNGs in class subfolders, and a pickled object whose
unpickling would run code (what a crafted file holds)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Tuple

import numpy as np


def write_class_pngs(root: Path, shape: Tuple[int, int, int], per_class: int,
                     rng: np.random.Generator,
                     names: Sequence[str] = ("cat", "dog", "owl")) -> Path:
    """`per_class` RGB PNGs of `shape` (H, W, 3) in root/<name>/<i>.png, dark noise with class k's
    colour channel raised by 180 (a cue a small model can learn). Returns root."""
    import PIL.Image

    for k, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 60, shape, dtype=np.uint8)
            img[:, :, k] += 180
            PIL.Image.fromarray(img).save(root / name / f"{i}.png")
    return root


class RunsCode:
    """Unpickling this calls exec, which writes 'ran' into `marker`: a test that loads it and
    finds no marker shows that the loader ran no code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))
