"""`import wgangp_fast` costs little beyond `import torch`: it loads no torch._dynamo or
torch._inductor (together about as long again as `import torch` itself), and neither do the eager
ops. torch.optim loads both itself (an Optimizer's constructor imports dynamo), so an eager
CriticStep is held to load nothing beyond what its optimizer loaded; a compiled step loads more,
which shows the check can fail. What the package does instead of importing dynamo (marking
backends.resolve as a constant for torch.compile) must stay what
torch.compiler.assume_constant_result does, and torch.compile must still take it."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r"""
import json, sys
import torch

def compilers(before):
    return sorted(m for m in set(sys.modules) - before
                  if m.startswith(("torch._dynamo", "torch._inductor")))

base = set(sys.modules)
import wgangp_fast as wgf
seen = {"import": compilers(base)}

torch.manual_seed(0)
critic = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
real, fake = torch.randn(6, 4), torch.randn(6, 4)
x = wgf.interpolate(real, fake, pac=2)
g = torch.randn(6, 4, requires_grad=True)
wgf.gradient_norm_penalty(g, pac=2, scale=10.0).backward()
wgf.gradient_penalty(critic, real, fake).backward()
seen["ops"] = compilers(base)

opt = torch.optim.Adam(critic.parameters(), lr=1e-3)
critic(real).sum().backward()
opt.step()
opt.zero_grad()
seen["optimizer"] = len(compilers(base))
after_optimizer = set(sys.modules)
for mode in ("eager", "auto"):
    step = wgf.CriticStep(critic, opt, mode=mode)
    step(real, fake)
seen["eager step"] = compilers(after_optimizer)
step = wgf.CriticStep(critic, opt, mode="compile", compile_options={"backend": "eager"})
step(real, fake)
seen["compiled step"] = len(compilers(after_optimizer))

# What the package set on resolve, against what the public decorator sets on a plain function.
from wgangp_fast import backends
def plain():
    return 0
marked = torch.compiler.assume_constant_result(plain)
seen["decorator sets"] = {k: repr(v) for k, v in vars(marked).items()}
seen["resolve has"] = {k: repr(v) for k, v in vars(backends.resolve).items()
                       if k in vars(marked)}

fn = torch.compile(lambda t: wgf.gradient_norm_penalty(t, pac=2), fullgraph=True,
                   backend="eager")
out = fn(torch.randn(6, 4))
seen["compiled"] = float(out) >= 0
seen["compiled loaded dynamo"] = "torch._dynamo" in sys.modules
print(json.dumps(seen))
"""


def _names(modules):
    return f"{len(modules)} modules: " + ", ".join(modules[:6]) + (", ..." if modules[6:] else "")


def test_import_and_eager_work_load_no_dynamo_or_inductor(tmp_path):
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["import"] == [], "import wgangp_fast loaded " + _names(seen["import"])
    assert seen["ops"] == [], "the eager ops loaded " + _names(seen["ops"])
    assert seen["optimizer"] > 0, "torch.optim no longer loads dynamo: hold the steps to none"
    assert seen["eager step"] == [], ("an eager CriticStep loaded, beyond its optimizer: "
                                      + _names(seen["eager step"]))
    assert seen["compiled step"] > 0
    # the package's mark is the public decorator's, so torch.compile reads it as it would that one
    assert seen["decorator sets"], "assume_constant_result sets nothing on the function now"
    assert seen["resolve has"] == seen["decorator sets"]
    assert seen["compiled"] and seen["compiled loaded dynamo"]
