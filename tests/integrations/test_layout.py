"""patch_method with layout options: methods of any signature, their specs, side effects and
verification, and the errors for layouts that do not fit."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from wgangp_fast.integrations import (
    IncompatibleSignatureError,
    is_patched,
    patch_method,
    patched_method,
    unpatch_method,
)
from wgangp_fast.integrations.ctgan_signature import builder
from wgangp_fast.integrations.patching import patch, validate_options
from wgangp_fast.testing import ctgan_gradient_penalty

from ..cases import FUSED_GRAD_FN, node_name

F64 = {"rtol": 1e-12, "atol": 1e-13}


def _critic(d=4):
    return nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, 1)).double()


def _plain(critic, real, fake, lambda_gp, alpha=None, dims=None):
    """lambda * mean((||grad|| - 1)^2), one alpha per sample from torch.rand(B) unless given."""
    b = real.shape[0]
    a = torch.rand(b) if alpha is None else alpha
    a = a.view(b, *([1] * (real.dim() - 1)))
    x = (a * real.detach() + (1 - a) * fake.detach()).requires_grad_(True)
    out = critic(x)
    (g,) = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)
    n = g.reshape(b, -1).norm(2, dim=1) if dims is None else g.norm(2, dim=dims)
    return lambda_gp * ((n - 1) ** 2).mean(), n


class Solver:
    """Critic as an attribute, lambda as an attribute, norms kept in a list."""

    def __init__(self, lambda_gp=3.0):
        self.net = _critic()
        self.weight = lambda_gp
        self.norm_log = []
        self.calls = 0

    def penalty(self, x_real, x_fake):
        self.calls += 1
        gp, n = _plain(self.net, x_real, x_fake, self.weight)
        self.norm_log.append(n.mean().item())
        return gp


class WithDefault:
    """Lambda from the signature's default, the critic passed in."""

    def gp(self, D, real, fake, lambda_gp=0.1):
        return _plain(D, real, fake, lambda_gp)[0]


class Static:
    @staticmethod
    def gradient_penalty(critic, real, fake, weight=10.0):
        return _plain(critic, real, fake, weight)[0]


class NumpyAlpha:
    def __init__(self):
        self.D = _critic()

    def gp(self, real, fake):
        a = torch.from_numpy(np.random.random((real.shape[0], 1))).view(-1)
        return _plain(self.D, real, fake, 10.0, alpha=a)[0]


class Sequence3D:
    def __init__(self):
        self.D = nn.Sequential(nn.Flatten(), _critic(12))

    def gp(self, real, fake):
        return _plain(self.D, real, fake, 10.0, dims=1)[0]


class Classy:
    @classmethod
    def gp(cls, real, fake):
        raise AssertionError("never called")


class BatchNormGAN:
    """A BatchNorm critic that already ran on real and fake in the graph the penalty joins."""

    def __init__(self):
        self.D = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.LeakyReLU(0.2),
                               nn.Linear(16, 1)).double()

    def gp(self, real, fake):
        return _plain(self.D, real, fake, 1.0)[0]

    def loss(self, real, fake):
        return self.D(real).mean() - self.D(fake).mean() + 10 * self.gp(real, fake)


ALL = (Solver, WithDefault, Static, NumpyAlpha, Sequence3D, Classy, BatchNormGAN)


@pytest.fixture(autouse=True)
def _clean():
    before = {cls: dict(vars(cls)) for cls in ALL}
    yield
    for cls in ALL:
        for name in ("penalty", "gp", "gradient_penalty"):
            if is_patched(cls, name):
                unpatch_method(cls, name)
        assert vars(cls) == before[cls]


def _pair(shape=(6, 4), seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=torch.float64),
            torch.randn(shape, generator=gen, dtype=torch.float64))


def test_attribute_critic_and_lambda_with_recorded_norms():
    torch.manual_seed(0)
    solver = Solver()
    real, fake = _pair()
    torch.manual_seed(1)
    want = solver.penalty(real, fake)
    want_log = list(solver.norm_log)
    solver.norm_log.clear()
    recorded = []

    def record(self, norms):
        recorded.append(norms)
        self.norm_log.append(norms.mean().item())

    handle = patch_method(Solver, "penalty", critic="self.net", lambda_gp="self.weight",
                          record=record)
    torch.manual_seed(1)
    got = solver.penalty(real, fake)
    assert FUSED_GRAD_FN in node_name(got.grad_fn)
    torch.testing.assert_close(got, want, **F64)
    # The first call ran the original too: its own log entry stands, record was skipped.
    assert solver.calls == 2 and recorded == [] and handle.checked
    assert solver.norm_log == pytest.approx(want_log, rel=1e-12)
    torch.manual_seed(1)
    solver.penalty(real, fake)
    assert solver.calls == 2 and len(recorded) == 1 and len(solver.norm_log) == 2
    assert recorded[0].shape == (6,) and not recorded[0].requires_grad
    assert solver.norm_log[1] == pytest.approx(want_log[0], rel=1e-12)


def test_an_original_that_logs_without_record_warns_at_the_first_call():
    # Without record= the log would get the first call's entry (the original ran for the check)
    # and then stop: a stale log nobody is told about.
    solver = Solver()
    real, fake = _pair()
    patch_method(Solver, "penalty", critic="self.net", lambda_gp="self.weight")
    with pytest.warns(RuntimeWarning) as caught:
        solver.penalty(real, fake)
    message = str(caught[0].message)
    for word in ("Solver.penalty changed", "self.norm_log (0 -> 1)", "self.calls (0 -> 1)",
                 "pass record="):
        assert word in message, f"{word!r} not in {message!r}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solver.penalty(real, fake)
    assert solver.calls == 1 and len(solver.norm_log) == 1


def test_a_logging_original_with_record_or_without_a_log_does_not_warn():
    real, fake = _pair()
    patch_method(Solver, "penalty", critic="self.net", lambda_gp="self.weight",
                 record=lambda self, n: None)
    patch_method(WithDefault, "gp", critic="D", lambda_gp="lambda_gp")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Solver().penalty(real, fake)
        WithDefault().gp(_critic(), real, fake)


def test_lambda_from_the_signature_default_or_the_call():
    torch.manual_seed(0)
    critic = _critic()
    real, fake = _pair()
    obj = WithDefault()
    wants = []
    for kwargs in ({}, {"lambda_gp": 2.0}):
        torch.manual_seed(4)
        wants.append(obj.gp(critic, real, fake, **kwargs))
    with patched_method(WithDefault, "gp", critic="D", lambda_gp="lambda_gp"):
        for kwargs, want in zip(({}, {"lambda_gp": 2.0}), wants):
            torch.manual_seed(4)
            torch.testing.assert_close(obj.gp(critic, real, fake, **kwargs), want, **F64)


def test_staticmethod_is_patched_and_restored():
    original = Static.__dict__["gradient_penalty"]
    torch.manual_seed(0)
    critic = _critic()
    real, fake = _pair()
    torch.manual_seed(2)
    want = Static.gradient_penalty(critic, real, fake)
    with patched_method(Static, "gradient_penalty", critic="critic", lambda_gp="weight") as h:
        assert isinstance(Static.__dict__["gradient_penalty"], staticmethod)
        torch.manual_seed(2)
        got = Static().gradient_penalty(critic, real, fake)
        assert h.checked
    torch.testing.assert_close(got, want, **F64)
    assert Static.__dict__["gradient_penalty"] is original


def test_verification_restores_the_numpy_stream():
    np.random.seed(9)
    torch.manual_seed(0)
    obj = NumpyAlpha()
    real, fake = _pair()
    want = obj.gp(real, fake)
    after = np.random.random(3)
    np.random.seed(9)
    with patched_method(NumpyAlpha, "gp", critic="self.D", lambda_gp=10.0,
                        alpha_fn=lambda m, like: torch.from_numpy(np.random.random(m)).to(like)):
        got = obj.gp(real, fake)
        assert np.array_equal(np.random.random(3), after)
    torch.testing.assert_close(got, want, **F64)


def test_verification_catches_a_layout_that_does_not_fit():
    torch.manual_seed(0)
    obj = Sequence3D()
    real, fake = _pair((4, 3, 4))
    with patched_method(Sequence3D, "gp", critic="self.D", lambda_gp=10.0):
        with pytest.raises(RuntimeError, match="do not describe this method.*norm_dims"):
            obj.gp(real, fake)
    torch.manual_seed(1)
    want = obj.gp(real, fake)
    with patched_method(Sequence3D, "gp", critic="self.D", lambda_gp=10.0, norm_dims=1):
        torch.manual_seed(1)
        torch.testing.assert_close(obj.gp(real, fake), want, **F64)
    with patched_method(Sequence3D, "gp", critic="self.D", lambda_gp=10.0, verify=False):
        with pytest.warns(UserWarning, match="norm_dims=1"):
            obj.gp(real, fake)
    with patched_method(Sequence3D, "gp", critic="self.D", lambda_gp=10.0, norm_dims=1,
                        verify=False):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            obj.gp(real, fake)


def test_device_option_checks_the_data_like_the_original_would():
    class Dev:
        def __init__(self):
            self.D = _critic()

        def gp(self, real, fake, device):
            alpha = torch.rand(real.shape[0], device=device)
            return _plain(self.D, real, fake, 1.0, alpha=alpha)[0]

    obj = Dev()
    real, fake = _pair()
    with patched_method(Dev, "gp", critic="self.D", lambda_gp=1.0, device="device"):
        with pytest.raises(ValueError, match=r"device is 'meta' but real is on cpu"):
            obj.gp(real, fake, "meta")
        torch.manual_seed(3)
        got = obj.gp(real, fake, "cpu")
    torch.manual_seed(3)
    torch.testing.assert_close(got, obj.gp(real, fake, "cpu"), **F64)
    with pytest.raises(ValueError, match="names neither a parameter of .* nor a device"):
        patch_method(Dev, "gp", critic="self.D", lambda_gp=1.0, device="gpu_device")


def test_callable_critic_keyword_inputs_and_returned_tuple():
    critic = _critic(5)

    class Keyed:
        def gp(self, real, fake, scale):
            x = real.detach().requires_grad_(True)
            raise AssertionError(f"unused {x.shape} {scale}")

    def scored(x, scale):
        return critic(x) * scale

    real, fake = _pair((6, 5))
    scale = torch.full((6, 1), 2.0, dtype=torch.float64)
    with patched_method(Keyed, "gp", critic=lambda **_: scored, critic_kwargs={"scale": "scale"},
                        lambda_gp=4.0, returns=("norms", "penalty"), verify=False):
        torch.manual_seed(6)
        norms, gp = Keyed().gp(real, fake, scale)
    torch.manual_seed(6)
    want, want_norms = _plain(lambda x: scored(x, scale), real, fake, 4.0)
    torch.testing.assert_close(gp, want, **F64)
    torch.testing.assert_close(norms, want_norms, **F64)


def test_patch_again_same_layout_warns_other_layout_raises():
    first = patch_method(Solver, "penalty", critic="self.net", lambda_gp="self.weight")
    with pytest.warns(RuntimeWarning, match="already patched"):
        assert patch_method(Solver, "penalty", critic="self.net",
                            lambda_gp="self.weight") is first
    with pytest.raises(ValueError, match="already patched"):
        patch_method(Solver, "penalty", critic="self.net", lambda_gp=2.0)
    first.unpatch()
    assert not is_patched(Solver, "penalty")


@pytest.mark.parametrize("options,error,match", [
    ({"critic": "self.net"}, TypeError, "needs lambda_gp"),
    ({"lambda_gp": 1.0, "critic": "net"}, ValueError,
     r"critic='net' names neither a parameter .*\(parameters: self, x_real, x_fake\)"),
    ({"lambda_gp": 1.0, "real": 3}, TypeError, "real must be a spec .* or a callable"),
    ({"lambda_gp": 1.0, "critic": 5}, TypeError, "critic must be a spec"),
    ({"lambda_gp": "ten"}, ValueError, "lambda_gp='ten' names neither"),
    ({"lambda_gp": float("nan")}, ValueError, "lambda_gp must be finite"),
    ({"lambda_gp": 1.0, "returns": "loss"}, ValueError, "returns must be 'penalty'"),
    ({"lambda_gp": 1.0, "record": "log"}, TypeError, "record must be callable"),
    ({"lambda_gp": 1.0, "alpha_fn": 0.5}, TypeError, "alpha_fn must be callable"),
    ({"lambda_gp": 1.0, "norm_dims": 1.5}, TypeError, "norm_dims must be"),
    ({"lambda_gp": 1.0, "detach_inputs": 1}, TypeError, "detach_inputs must be a bool"),
    ({"lambda_gp": 1.0, "critic_kwargs": ["x"]}, TypeError, "critic_kwargs must be a dict"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_layouts_that_do_not_fit_are_refused_at_patch_time(options, error, match):
    with pytest.raises(error, match=match):
        patch_method(Solver, "penalty", **options)
    assert not is_patched(Solver, "penalty")


def test_lambda_hint_names_the_parameter():
    with pytest.raises(TypeError, match=r"parameter 'lambda_gp': lambda_gp='lambda_gp' reads it"):
        patch_method(WithDefault, "gp", critic="D")


def test_classmethod_and_missing_attribute():
    with pytest.raises(IncompatibleSignatureError, match="classmethods"):
        patch_method(Classy, "gp", lambda_gp=1.0)
    patch_method(Solver, "penalty", critic="self.network", lambda_gp=1.0)
    real, fake = _pair()
    with pytest.raises(AttributeError, match=r"critic='self.network': self \(Solver\) has no "
                                             r"attribute 'network'"):
        Solver().penalty(real, fake)


def _loss_and_grads(gan, real, fake):
    torch.manual_seed(11)
    gan.D.zero_grad(set_to_none=True)
    loss = gan.loss(real, fake)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in gan.D.parameters()], gan.D[1].running_mean


@pytest.mark.parametrize("verify", [True, False])
def test_check_leaves_what_the_callers_graph_saved_untouched(verify):
    # BatchNorm saves tensors for its backward in D(real) and D(fake); the first-call check
    # used to write the restored statistics back into them, and loss.backward() then failed
    # with "modified by an inplace operation".
    real, fake = _pair((8, 4))
    torch.manual_seed(0)
    gan = BatchNormGAN()
    state = {k: v.clone() for k, v in gan.D.state_dict().items()}
    want = _loss_and_grads(gan, real, fake)
    gan.D.load_state_dict(state)
    handle = patch_method(BatchNormGAN, "gp", critic="self.D", lambda_gp=1.0, verify=verify)
    buffers = [b for b in gan.D.buffers()]
    got = _loss_and_grads(gan, real, fake)
    assert handle.checked is verify
    assert all(a is b for a, b in zip(gan.D.buffers(), buffers))
    torch.testing.assert_close(got[0], want[0], **F64)
    for g, w in zip(got[1], want[1]):
        torch.testing.assert_close(g, w, **F64)
    torch.testing.assert_close(got[2], want[2], **F64)
    assert int(gan.D[1].num_batches_tracked) == 3
    again = _loss_and_grads(gan, real, fake)
    assert torch.isfinite(again[0])


def test_unknown_context_manager_option():
    with pytest.raises(TypeError, match=r"unknown options \['lamda'\]"):
        with patched_method(Solver, "penalty", lamda=1.0):
            pass


def test_ctgan_mode_is_unchanged_without_layout_options():
    class Ctganish(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _critic(3)

        def forward(self, x):
            return self.net(x)

        def calc_gradient_penalty(self, real_data, fake_data, device="cpu", pac=10, lambda_=10):
            return ctgan_gradient_penalty(self, real_data, fake_data, device, pac, lambda_)

    with pytest.raises(IncompatibleSignatureError, match="default of 'pac' is 10, expected 1"):
        patch(Ctganish, "calc_gradient_penalty", validate_options("auto", True),
              builder("auto", {"pac": 1}))
    handle = patch_method(Ctganish)
    assert "layout" not in handle.options
    real, fake = _pair((10, 3))
    torch.manual_seed(0)
    d = Ctganish()
    torch.manual_seed(5)
    got = d.calc_gradient_penalty(real, fake, pac=5)
    torch.manual_seed(5)
    want = ctgan_gradient_penalty(d, real, fake, "cpu", 5, 10)
    torch.testing.assert_close(got, want, **F64)
    handle.unpatch()


# ---------------------------------------------------------------------------------------------
# A critic chosen per call (RadialGAN picks one discriminator per domain)
# ---------------------------------------------------------------------------------------------


class PerDomain:
    """One critic per domain, the penalty method told the domain: the shape of synthcity's
    RadialGAN. Its unpatched penalty is the per-sample one with alpha from torch.rand(B, 1)."""

    def __init__(self):
        torch.manual_seed(0)
        self.discriminators = nn.ModuleList([_critic(), _critic()])
        self.named = nn.ModuleDict({"a": self.discriminators[0]})

    def gp(self, domain, real, fake, batch_size):
        a = torch.rand(batch_size, 1)
        x = (a * real + (1 - a) * fake).requires_grad_(True)
        out = self.discriminators[domain](x).squeeze()
        (g,) = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)
        return ((g.norm(2, dim=-1) - 1) ** 2).mean()


def _per_domain_run(calls=(1, 0, 1, 1)):
    obj = PerDomain()
    out = []
    for i, domain in enumerate(calls):
        real, fake = _pair((6, 4), seed=i)
        torch.manual_seed(10 + i)
        pen = obj.gp(domain, real, fake, 6)
        grads = torch.autograd.grad(pen, list(obj.discriminators[domain].parameters())[:2])
        out.append((pen.detach(), grads))
    return out


@pytest.mark.parametrize("critic", [
    "self.discriminators[domain]",
    lambda self, domain, **_: self.discriminators[domain],
], ids=["indexed-spec", "callable"])
def test_a_critic_chosen_per_call(critic):
    want = _per_domain_run()
    handle = patch_method(PerDomain, "gp", critic=critic, lambda_gp=1.0, detach_inputs=False)
    try:
        got = _per_domain_run()
    finally:
        handle.unpatch()
    assert handle.checked
    for (gp, grads), (wp, wgrads) in zip(got, want):
        torch.testing.assert_close(gp, wp, **F64)
        for g, w in zip(grads, wgrads):
            torch.testing.assert_close(g, w, **F64)


def test_literal_indices_and_a_fixed_critic_that_is_the_wrong_one():
    real, fake = _pair((6, 4))
    with patched_method(PerDomain, "gp", critic="self.named['a']", lambda_gp=1.0):
        with pytest.raises(TypeError, match=r"real='domain' gave a int, not a batch .* took the "
                                            r"first parameter no other option uses"):
            PerDomain().gp(0, real, fake, 6)
    with patched_method(PerDomain, "gp", critic="self.named['a']", lambda_gp=1.0,
                        real="real", fake="fake", detach_inputs=False) as handle:
        PerDomain().gp(0, real, fake, 6)
        assert handle.checked
    with patched_method(PerDomain, "gp", critic="self.discriminators[0]", lambda_gp=1.0,
                        real="real", fake="fake", detach_inputs=False):
        with pytest.raises(RuntimeError, match=r"never took the gradient of "
                                               r"critic='self.discriminators\[0\]'"):
            PerDomain().gp(1, real, fake, 6)


@pytest.mark.parametrize("spec,match", [
    ("self.discriminators[dom]", r"indexes by 'dom', which is not a parameter"),
    ("discriminators[domain]", r"names neither a parameter .* nor a path from one"),
    ("self.discriminators[1:2]", r"is not a spec"),
    ("self.D(x)", r"is not a spec"),
    ("self.discriminators[domain", r"is not a spec"),
])
def test_refused_specs_are_never_suggested(spec, match):
    with pytest.raises(ValueError, match=match) as caught:
        patch_method(PerDomain, "gp", critic=spec, lambda_gp=1.0)
    message = str(caught.value)
    assert message.count(spec) == 1, message
    assert "'self', 'self.<attribute>' or 'self.<attribute>[<parameter or literal>]'" in message \
        or "indexes by" in message
    assert not is_patched(PerDomain, "gp")


def test_a_callable_critic_that_cannot_take_the_arguments_says_how_to_pass_a_function():
    critic = _critic()

    def score(x):
        return critic(x)

    with pytest.raises(TypeError, match=r"critic=lambda \*\*_: <the function>"):
        patch_method(WithDefault, "gp", critic=score, lambda_gp=1.0)
    assert not is_patched(WithDefault, "gp")
    with pytest.raises(TypeError, match="returned int, not a critic"):
        with patched_method(WithDefault, "gp", critic=lambda **_: 3, lambda_gp=1.0):
            WithDefault().gp(critic, *_pair())
    real, fake = _pair()
    torch.manual_seed(1)
    want = WithDefault().gp(critic, real, fake)
    with patched_method(WithDefault, "gp", critic=lambda **_: score, lambda_gp="lambda_gp",
                        real="real", fake="fake") as handle:
        # a plain function is no module and no argument: its call cannot be watched
        torch.manual_seed(1)
        with pytest.warns(RuntimeWarning, match="could not check.*function, not an nn.Module"):
            first = WithDefault().gp(critic, real, fake)
        assert torch.equal(first, want) and handle.verified and not handle.checked
        torch.manual_seed(1)
        got = WithDefault().gp(critic, real, fake)
    torch.testing.assert_close(got, want, **F64)
