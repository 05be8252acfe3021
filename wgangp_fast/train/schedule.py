"""The learning-rate schedule's linear decay, as a function of the step: its horizon (the step
where it reaches 0, `lr_decay_steps`, recorded in the checkpoint) and its current segment (start
step, factor there). A run starts with the segment (0, 1.0): factor 1 - step / horizon, as
Gulrajani et al. decay it for CIFAR-10. A resume that moves the horizon (--lr-decay-steps N)
starts a new segment at the last step taken, from its factor down to 0 at N: the learning rate
goes on from where it was, without a jump, and every step's rate stays a function of the step,
so a resumed run follows the schedule the uninterrupted one would."""

from __future__ import annotations

from typing import Tuple

__all__ = ["FIRST_SEGMENT", "decay_factor", "replan"]

FIRST_SEGMENT: Tuple[int, float] = (0, 1.0)


def decay_factor(step: int, horizon: int, segment: Tuple[int, float] = FIRST_SEGMENT) -> float:
    """The decay's factor of the learning rate at `step` (0 from the horizon on)."""
    start, factor = segment
    if (start, factor) == FIRST_SEGMENT:
        return max(0.0, 1.0 - step / max(horizon, 1))
    return factor * max(0.0, (horizon - step) / (horizon - start))


def replan(step: int, horizon: int, segment: Tuple[int, float], new_horizon: int
           ) -> Tuple[int, float]:
    """The segment of a run resumed at `step` (steps taken) whose horizon moves to
    `new_horizon`: it starts at the last step taken, with that step's factor."""
    anchor = max(step - 1, 0)
    if new_horizon <= anchor:
        raise ValueError(f"lr_decay_steps {new_horizon} (--lr-decay-steps) must be after step "
                         f"{anchor}, the last step the run took")
    return anchor, decay_factor(anchor, horizon, segment)
