"""docs/porting.md's two tables of layouts, row by row: each alpha draw on the left of the
alpha_fn table against the alpha_fn (or generator) on its right, from the same random state,
under both default dtypes and for both data dtypes; and each row of the alpha and norm groups
table against a float64 transcription of the layout it names."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from wgangp_fast import gradient_penalty
from wgangp_fast.integrations import drop_in_penalty

from . import porting_doc as doc

DT = torch.float64
ALPHA_ROWS = doc.table(["the original draws", "`alpha_fn`"])

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# The page's alpha_fn table: each draw on the left against the alpha_fn (or generator) on the
#    right, from the same random state, under both default dtypes and for both data dtypes.
# ---------------------------------------------------------------------------------------------

B, C, H, W = 6, 2, 3, 3
_DRAW_STARTS = ("torch.rand(", "np.random.")


def _alpha_rows():
    rows = []
    for left, right in ALPHA_ROWS:
        draws = [c for c in doc.code(left) if c.startswith(_DRAW_STARTS)]
        fix = doc.code(right)[0]
        assert draws, f"alpha row {left!r}: no draw to check"
        assert fix.startswith("lambda m, like:") or fix == "generator=gen", fix
        rows.append(pytest.param(draws, fix, id=fix[:40]))
    return rows


def _seed(gen):
    torch.manual_seed(21)
    np.random.seed(21)
    gen.manual_seed(22)


def _plain_penalty(critic, real, fake, alpha):
    """The original's interpolation with its own alpha (its dtype and layout), then the penalty."""
    a = alpha.reshape(B, *([1] * (real.dim() - 1))) if alpha.numel() == B else alpha
    x = (a * real + (1 - a) * fake).requires_grad_(True)
    out = critic(x)
    (g,) = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)
    return ((g.reshape(B, -1).norm(2, dim=1) - 1) ** 2).mean()


@pytest.mark.parametrize("default_dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("data_dtype", [torch.float32, torch.float64], ids=["data32", "data64"])
@pytest.mark.parametrize("draws, fix", _alpha_rows())
def test_alpha_rows_draw_what_the_original_draws(draws, fix, data_dtype, default_dtype):
    before = torch.get_default_dtype()
    torch.set_default_dtype(default_dtype)
    try:
        gen = torch.Generator()
        data = torch.Generator().manual_seed(0)
        real = torch.randn(B, C, H, W, generator=data).to(data_dtype)
        fake = torch.randn(B, C, H, W, generator=data).to(data_dtype)
        critic = nn.Sequential(nn.Flatten(), nn.Linear(C * H * W, 8), nn.Tanh(),
                               nn.Linear(8, 1)).to(data_dtype)
        kwargs = ({"generator": gen} if fix == "generator=gen"
                  else {"alpha_fn": eval(fix, {"torch": torch, "np": np})})
        ran = inapplicable = 0
        for draw in draws:
            if ".cuda()" in draw and not torch.cuda.is_available():
                continue
            scope = {"torch": torch, "np": np, "B": B, "C": C, "H": H, "W": W,
                     "D": C * H * W, "device": real.device, "real": real, "gen": gen}
            _seed(gen)
            alpha = eval(draw, scope)
            if isinstance(alpha, np.ndarray):  # the codes wrap it in Tensor(...) of their dtype
                alpha = torch.from_numpy(alpha).to(data_dtype)
            if torch.result_type(alpha, real) != data_dtype:
                # a float64 alpha turns float32 data's interpolates into float64, which the
                # float32 critic refuses: the original cannot run in this combination either
                inapplicable += 1
                continue
            want = _plain_penalty(critic, real, fake, alpha.to(real.device))
            streams = (torch.rand(2), np.random.random(2), torch.rand(2, generator=gen))
            _seed(gen)
            if "alpha_fn" in kwargs:
                mine = kwargs["alpha_fn"](B, real).reshape(B, -1)[:, 0]
                assert torch.equal(mine.to(data_dtype).cpu(),
                                   alpha.reshape(B, -1)[:, 0].to(data_dtype).cpu()), draw
                _seed(gen)
            got = drop_in_penalty(critic, real, fake, lambda_gp=1.0, **kwargs)
            after = (torch.rand(2), np.random.random(2), torch.rand(2, generator=gen))
            assert all(np.array_equal(np.asarray(a), np.asarray(b))
                       for a, b in zip(after, streams)), f"{draw}: other random streams after"
            rtol = 1e-5 if data_dtype == torch.float32 else 1e-12
            torch.testing.assert_close(got, want, rtol=rtol, atol=0, msg=draw)
            ran += 1
        assert ran or (inapplicable and default_dtype != data_dtype), (
            f"none of {draws} can run here")
    finally:
        torch.set_default_dtype(before)


# ---------------------------------------------------------------------------------------------
# The page's table of alpha groups and norm groups, row by row, against the layout it names
# ---------------------------------------------------------------------------------------------

_GROUPS = {  # first-cell phrase -> (samples per alpha, samples per norm) of a batch of N = 20
    "one alpha and one norm per sample": (1, 1),
    "per group of 10 rows": (10, 10),
    "one alpha per sample, one norm over the whole batch": (1, 20),
    "one alpha and one norm for the whole batch": (20, 20),
    "one 2-norm of every axis": (20, 20),
}


def _grouped_reference(critic, real, fake, alpha_per, norm_per):
    """One alpha per alpha_per consecutive samples (torch.rand of N / alpha_per values), one norm
    over each norm_per consecutive samples' gradients, 10 * mean((norm - 1)^2)."""
    n = real.shape[0]
    a = torch.rand(n // alpha_per).repeat_interleave(alpha_per).view(n, 1, 1, 1)
    x = (a * real + (1 - a) * fake).requires_grad_(True)
    out = critic(x)
    (g,) = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)
    return 10.0 * ((g.reshape(n // norm_per, -1).norm(2, dim=1) - 1) ** 2).mean()


@pytest.mark.parametrize("cells", doc.table(["the original", "options"]), ids=lambda c: c[0][:40])
def test_group_rows_equal_the_layout_they_name(cells):
    left, options = cells
    (alpha_per, norm_per), = [v for p, v in _GROUPS.items() if p in left]
    kwargs = eval(f"dict({', '.join(doc.code(options))})") if doc.code(options) else {}
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Flatten(), nn.Linear(18, 8), nn.Tanh(), nn.Linear(8, 1)).to(DT)
    gen = torch.Generator().manual_seed(1)
    real = torch.randn(20, 2, 3, 3, generator=gen, dtype=DT)
    fake = torch.randn(20, 2, 3, 3, generator=gen, dtype=DT)
    torch.manual_seed(2)
    want = _grouped_reference(critic, real, fake, alpha_per, norm_per)
    torch.manual_seed(2)
    got = gradient_penalty(critic, real, fake, lambda_gp=10.0, **kwargs)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def test_every_group_row_is_checked():
    rows = doc.table(["the original", "options"])
    assert len(rows) == len(_GROUPS)
    assert all(sum(p in r[0] for p in _GROUPS) == 1 for r in rows)
