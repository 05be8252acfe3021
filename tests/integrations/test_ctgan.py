"""CTGAN with wgangp_fast patched in: same penalties, same discriminator, clean undo."""

from __future__ import annotations

import warnings

import pytest
import torch

ctgan_module = pytest.importorskip("ctgan.synthesizers.ctgan")
pd = pytest.importorskip("pandas")
datasets = pytest.importorskip("sklearn.datasets")

from ctgan import CTGAN  # noqa: E402

from wgangp_fast.integrations import IncompatibleSignatureError  # noqa: E402
from wgangp_fast.integrations import ctgan as wgf_ctgan  # noqa: E402

from ..cases import FUSED_GRAD_FN, node_name  # noqa: E402

Discriminator = ctgan_module.Discriminator
METHOD = "calc_gradient_penalty"
ORIGINAL = Discriminator.__dict__[METHOD]

@pytest.fixture(autouse=True)
def _leave_ctgan_unpatched():
    yield
    if wgf_ctgan.is_patched():
        wgf_ctgan.unpatch()
    assert Discriminator.__dict__[METHOD] is ORIGINAL


pytestmark = pytest.mark.usefixtures("one_thread")


def _iris_frame():
    bunch = datasets.load_iris(as_frame=True)
    df = bunch.frame.drop(columns=["target"])
    df["species"] = [str(bunch.target_names[t]) for t in bunch.target]
    df["petal_size"] = pd.cut(df["petal length (cm)"], bins=[0.0, 2.5, 5.0, 10.0],
                              labels=["small", "medium", "large"]).astype(str)
    return df


def _recorded_fit(df, *, pac, device, patched, epochs=2):
    """Fit a small seeded CTGAN; returns (penalties, grad_fn names, discriminator, model)."""
    values, grad_fns, owners = [], [], []
    inner = Discriminator.__dict__[METHOD] if patched else ORIGINAL

    def recorder(self, *args, **kwargs):
        pen = inner(self, *args, **kwargs)
        values.append(pen.detach().clone())
        grad_fns.append(node_name(pen.grad_fn))
        owners.append(self)
        return pen

    model = CTGAN(embedding_dim=16, generator_dim=(32, 32), discriminator_dim=(32, 32),
                  batch_size=50, epochs=epochs, pac=pac, enable_gpu=device.type == "cuda")
    model.set_random_state(0)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(0)
    setattr(Discriminator, METHOD, recorder)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model.fit(df, discrete_columns=["species", "petal_size"])
    finally:
        setattr(Discriminator, METHOD, inner)
    assert len(set(map(id, owners))) == 1
    return torch.stack(values).cpu(), grad_fns, owners[0], model


def _compare_fits(device, pac, atol_pen, atol_w):
    df = _iris_frame()
    ref_vals, ref_fns, ref_disc, _ = _recorded_fit(df, pac=pac, device=device, patched=False)
    handle = wgf_ctgan.patch()
    assert not handle.verified and not handle.checked
    try:
        vals, fns, disc, _ = _recorded_fit(df, pac=pac, device=device, patched=True)
    finally:
        wgf_ctgan.unpatch()
    # One meaning on both paths: the first call was compared with CTGAN's own and matched.
    assert handle.verified and handle.checked
    steps = 2 * (len(df) // 50)
    assert ref_vals.shape == vals.shape == (steps,)
    assert all(FUSED_GRAD_FN in f for f in fns)
    assert not any(FUSED_GRAD_FN in f for f in ref_fns)
    torch.testing.assert_close(vals, ref_vals, rtol=1e-5, atol=atol_pen)
    ref_state, state = ref_disc.state_dict(), disc.state_dict()
    assert ref_state.keys() == state.keys()
    for key in ref_state:
        torch.testing.assert_close(state[key], ref_state[key], rtol=1e-5, atol=atol_w,
                                   msg=lambda m, k=key: f"discriminator {k}: {m}")


@pytest.mark.parametrize("pac", [10, 5])
def test_seeded_fit_matches_unpatched_step_by_step(pac):
    _compare_fits(torch.device("cpu"), pac, atol_pen=1e-5, atol_w=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_seeded_fit_matches_unpatched_on_gpu():
    _compare_fits(torch.device("cuda"), 10, atol_pen=1e-4, atol_w=1e-5)


def _toy_discriminator(device="cpu", pac=10, input_dim=7):
    torch.manual_seed(3)
    return Discriminator(input_dim, (16, 16), pac=pac).to(device)


def _penalty_and_grads(disc, real, fake, call):
    torch.manual_seed(11)
    fake = fake.clone().requires_grad_(True)
    disc.zero_grad(set_to_none=True)
    pen = call(disc, real, fake)
    pen.backward()
    after = torch.rand(4, device=real.device)
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in disc.parameters()]
    return pen.detach(), grads, fake.grad.clone(), after


@pytest.mark.parametrize("call", [
    lambda d, r, f: d.calc_gradient_penalty(r, f, "cpu", 10),
    lambda d, r, f: d.calc_gradient_penalty(r, f, device="cpu", pac=10, lambda_=3.5),
    lambda d, r, f: d.calc_gradient_penalty(r, f),
], ids=["ctgan-positional", "keywords-lambda", "defaults"])
def test_method_matches_original_value_grads_and_rng(call):
    disc = _toy_discriminator()
    gen = torch.Generator().manual_seed(5)
    real = torch.randn(40, 7, generator=gen)
    fake = torch.randn(40, 7, generator=gen)
    ref = _penalty_and_grads(disc, real, fake, call)
    with wgf_ctgan.patched():
        assert Discriminator.__dict__[METHOD] is not ORIGINAL
        got = _penalty_and_grads(disc, real, fake, call)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-6)
    for g, r in zip(got[1], ref[1]):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[2], ref[2], rtol=1e-5, atol=1e-6)
    assert torch.equal(got[3], ref[3]), "the patched method consumed the RNG differently"


def test_unpatch_restores_the_original_function_object():
    handle = wgf_ctgan.patch()
    assert wgf_ctgan.is_patched() and handle.active
    assert Discriminator.calc_gradient_penalty is not ORIGINAL
    assert Discriminator.calc_gradient_penalty.__wrapped__ is ORIGINAL
    assert wgf_ctgan.unpatch() is True
    assert Discriminator.__dict__[METHOD] is ORIGINAL
    assert Discriminator.calc_gradient_penalty is ORIGINAL
    assert not wgf_ctgan.is_patched() and not handle.active


def test_context_manager_restores_even_after_an_error():
    with pytest.raises(KeyError):
        with wgf_ctgan.patched():
            assert wgf_ctgan.is_patched()
            raise KeyError("inside")
    assert Discriminator.__dict__[METHOD] is ORIGINAL


def test_context_manager_leaves_an_earlier_patch_in_place():
    handle = wgf_ctgan.patch()
    with wgf_ctgan.patched() as inner:
        assert inner is handle
    assert wgf_ctgan.is_patched() and handle.active


def test_patching_twice_warns_and_changes_nothing():
    first = wgf_ctgan.patch()
    installed = Discriminator.__dict__[METHOD]
    with pytest.warns(RuntimeWarning, match="already patched"):
        second = wgf_ctgan.patch()
    assert second is first and Discriminator.__dict__[METHOD] is installed
    with pytest.raises(ValueError, match="unpatch it before patching"):
        wgf_ctgan.patch(backend="reference")
    wgf_ctgan.unpatch()
    assert Discriminator.__dict__[METHOD] is ORIGINAL


def test_unpatch_without_patch_warns():
    with pytest.warns(RuntimeWarning, match="not patched"):
        assert wgf_ctgan.unpatch() is False
    assert Discriminator.__dict__[METHOD] is ORIGINAL


def _seed000_style(self, real_data, fake_data, device, pac=1):
    raise AssertionError("never called")


def _other_defaults(self, real_data, fake_data, device="cpu", pac=1, lambda_=10):
    raise AssertionError("never called")


def _extra_parameter(self, real_data, fake_data, device="cpu", pac=10, lambda_=10, center=1.0):
    raise AssertionError("never called")


@pytest.mark.parametrize("method,match", [
    (_seed000_style, "expected the CTGAN calc_gradient_penalty signature"),
    (_other_defaults, "default of 'pac' is 1, expected 10"),
    (_extra_parameter, "expected the CTGAN calc_gradient_penalty signature"),
    (staticmethod(_other_defaults), "plain function"),
], ids=["seed000", "pac-default", "extra-param", "staticmethod"])
def test_a_ctgan_with_another_signature_is_refused(monkeypatch, method, match):
    monkeypatch.setattr(Discriminator, METHOD, method)
    with pytest.raises(IncompatibleSignatureError, match=match):
        wgf_ctgan.patch()
    assert Discriminator.__dict__[METHOD] is method
    assert not wgf_ctgan.is_patched()


def test_bad_options_are_type_errors():
    with pytest.raises(TypeError, match="backend"):
        wgf_ctgan.patch(backend=1)
    with pytest.raises(TypeError, match="verify"):
        wgf_ctgan.patch(verify="yes")
    assert not wgf_ctgan.is_patched()


def test_batch_not_multiple_of_pac_is_a_clear_error():
    disc = _toy_discriminator()
    with wgf_ctgan.patched(verify=False):
        with pytest.raises(ValueError, match="multiple of pac=10"):
            disc.calc_gradient_penalty(torch.randn(15, 7), torch.randn(15, 7))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_method_matches_original():
    disc = _toy_discriminator("cuda")
    real = torch.randn(40, 7, device="cuda")
    fake = torch.randn(40, 7, device="cuda")

    def call(d, r, f):
        return d.calc_gradient_penalty(r, f, torch.device("cuda"), 10)

    ref = _penalty_and_grads(disc, real, fake, call)
    with wgf_ctgan.patched():
        got = _penalty_and_grads(disc, real, fake, call)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-5)
    for g, r in zip(got[1], ref[1]):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
    assert torch.equal(got[3], ref[3])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_data_with_cpu_device_argument_draws_alpha_from_the_cpu_rng():
    from wgangp_fast.testing import autograd_gradient_norm_penalty, autograd_interpolate

    disc = _toy_discriminator("cuda").eval()
    real = torch.randn(40, 7, device="cuda")
    fake = torch.randn(40, 7, device="cuda")
    torch.manual_seed(2)
    alpha = torch.rand(4, 1, 1, device="cpu").to("cuda")
    x_hat = autograd_interpolate(real, fake, alpha, pac=10).requires_grad_(True)
    (grads,) = torch.autograd.grad(disc(x_hat).sum(), x_hat)
    expected = autograd_gradient_norm_penalty(grads, pac=10, scale=10.0)
    with wgf_ctgan.patched():
        torch.manual_seed(2)
        with pytest.warns(RuntimeWarning, match="could not check"):
            got = disc.calc_gradient_penalty(real, fake, "cpu", 10)
    assert got.device.type == "cuda"
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
