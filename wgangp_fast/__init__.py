"""wgangp_fast: fused, autograd-aware gradient-penalty ops for PyTorch.

```python
from wgangp_fast import gradient_penalty
gp = gradient_penalty(critic, real, fake, lambda_gp=10.0, pac=1)
```
"""

from . import ops as _ops  # noqa: F401  (registers the torch.library ops)
from .backends import available_backends, backend_status
from .integrations.dropin import drop_in_penalty
from .ops import gradient_norm_penalty, interpolate
from .penalty import (
    WassersteinGPLoss,
    calc_gradient_penalty,
    gradient_penalty,
    input_gradients,
)
from .steps import CriticStep, GeneratorStep, StepStats, TrainStats, TrainStep

__version__ = "0.1.0"

__all__ = [
    "CriticStep",
    "GeneratorStep",
    "StepStats",
    "TrainStats",
    "TrainStep",
    "WassersteinGPLoss",
    "available_backends",
    "backend_status",
    "calc_gradient_penalty",
    "drop_in_penalty",
    "gradient_norm_penalty",
    "gradient_penalty",
    "input_gradients",
    "interpolate",
]
