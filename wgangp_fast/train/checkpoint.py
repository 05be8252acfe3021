"""Checkpoints: atomic writes, the checks a checkpoint passes before a run continues from it, and
the capture and restore of every RNG a run draws from (the output folder's lock and free-space
check are in wgangp_fast.train.folder).

Checkpoints are written to a temporary file in the same folder, fsync'ed and renamed over the old
one, and load with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import tempfile
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from . import data as data_mod
from .config import LOSS_KEYS
from .folder import CHECKPOINT_NAME, free_bytes, megabytes

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "CheckpointError",
    "CheckpointWriteError",
    "atomic_save",
    "check_checkpoint",
    "check_optimizer_state",
    "read_checkpoint",
]

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot continue a run: not ours, damaged, or holding NaN/inf."""


class CheckpointWriteError(OSError):
    """The checkpoint could not be written (no space left, no permission); the previous one, if
    any, is untouched."""



def _os_error_in(exc: BaseException) -> OSError | None:
    """The first OSError with an errno in the chain of `exc`: torch.save reports a full disk as a
    RuntimeError ("unexpected pos ...") raised while handling the OSError that says so."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None



def atomic_save(obj: Any, path: str) -> None:
    """torch.save to a temporary file in the same folder, fsync, then os.replace onto `path`:
    a crash at any point leaves either the old file or the new one, never a torn one.

    A write that fails for want of space or permission raises CheckpointWriteError, which says
    so in its first line (torch's own error for a full disk is an "unexpected pos" two chained
    exceptions above the "No space left on device")."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                                   dir=folder)
    except OSError as exc:
        raise _write_error(path, exc, exc) from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        cause = _os_error_in(exc)
        if cause is not None:
            raise _write_error(path, cause, exc) from None
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _write_error(path: str, cause: OSError, exc: BaseException) -> CheckpointWriteError:
    folder = os.path.dirname(os.path.abspath(path))
    kept = "the previous checkpoint is kept" if os.path.isfile(path) else "no checkpoint written"
    reason = cause.strerror or str(cause)
    if cause.errno in (errno.ENOSPC, errno.EDQUOT):
        free = free_bytes(folder)
        shown = f", {megabytes(free)} free" if free is not None else ""
        fix = "free some space or choose another output folder (--out)"
        reason = f"{reason} (the filesystem of {folder}{shown})"
    else:
        fix = "check the output folder's permissions, or choose another (--out)"
    return CheckpointWriteError(cause.errno, f"cannot write the checkpoint {path}: {reason}; "
                                             f"{kept}: {fix}")




def _non_finite(tensors, where: str) -> List[str]:
    """Names of the floating-point tensors in a (nested) dict or list that hold NaN or inf."""
    bad = []
    if isinstance(tensors, Tensor):
        if tensors.is_floating_point() and not torch.isfinite(tensors).all():
            bad.append(where)
    elif isinstance(tensors, dict):
        for k, v in tensors.items():
            bad += _non_finite(v, f"{where}.{k}" if where else str(k))
    elif isinstance(tensors, (list, tuple)):
        for i, v in enumerate(tensors):
            bad += _non_finite(v, f"{where}[{i}]")
    return bad


# what a checkpoint must hold, and the type of each entry
_CHECKPOINT_KEYS = {
    "format": int, "config": dict, "step": int, "critic_iters": int, "generator": dict,
    "critic": dict, "optimizer_g": dict, "optimizer_c": dict, "sampler": dict, "rng": dict,
    "fixed_noise": Tensor, "history": dict,
}
# the entries that hold the state a resumed run computes with: NaN or inf in any is fatal
_FINITE_PARTS = ("generator", "critic", "generator_ema", "optimizer_g", "optimizer_c",
                 "fixed_noise")


def check_checkpoint(state: Any, path: str = "checkpoint") -> Dict[str, Any]:
    """`state` if it is a checkpoint this trainer wrote and can continue from, else a
    CheckpointError that says what is wrong with it: not our format (another file, a bare
    tensor or state_dict), or NaN/inf in the weights or optimiser state."""
    fix = ("resume from the checkpoint.pt that `wgangp-fast train` (WGANGPTrainer) wrote in its "
           "output folder, or start a new run without --resume")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a wgangp_fast checkpoint (it holds a "
                              f"{type(state).__name__}, not the dict WGANGPTrainer.save_checkpoint "
                              f"writes): {fix}")
    missing = [k for k in _CHECKPOINT_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a wgangp_fast checkpoint (a dict without "
                              f"{', '.join(missing)}): {fix}")
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {state['format']!r} is not supported "
                              f"(expected {CHECKPOINT_FORMAT}): {fix}")
    wrong = [f"{k} is a {type(state[k]).__name__}, expected {t.__name__}"
             for k, t in _CHECKPOINT_KEYS.items()
             if not isinstance(state[k], t) or (t is int and isinstance(state[k], bool))]
    history = state["history"]
    if not wrong and not all(isinstance(history.get(k), Tensor) and len(history[k]) == state["step"]
                             for k in LOSS_KEYS):
        wrong.append(f"history does not hold {', '.join(LOSS_KEYS)} with one value per step "
                     f"({state['step']})")
    if wrong:
        raise CheckpointError(f"{path}: a damaged or foreign checkpoint ({'; '.join(wrong)}): "
                              f"{fix}")
    _check_random_states(state, path)
    bad = []
    for part in _FINITE_PARTS:
        bad += _non_finite(state.get(part), part)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise CheckpointError(f"{path}: the checkpoint holds NaN or infinite values ({shown}), "
                              f"so a run resumed from it cannot recover: start a new run without "
                              f"--resume, or resume from an earlier copy of the checkpoint")
    return state


_DAMAGED_FIX = ("resume from an earlier copy of the checkpoint, or start a new run without "
                "--resume")


def _shown(value: Any) -> str:
    """A short description of a checkpoint entry for an error message."""
    if value is _ABSENT:
        return "absent"
    if isinstance(value, Tensor):
        dtype = str(value.dtype).replace("torch.", "")
        article = "an" if dtype.startswith("int") else "a"
        return f"{article} {dtype} tensor of shape {list(value.shape)}"
    if isinstance(value, (bool, int, float)) or value is None:
        return repr(value)
    return f"a {type(value).__name__}"


_ABSENT = object()


def _damaged(path: str, entry: str, expected: str, got: str) -> CheckpointError:
    return CheckpointError(f"{path}: the checkpoint's {entry} is damaged: expected {expected}, "
                           f"got {got}; {_DAMAGED_FIX}")


def _entry(parent: Dict[str, Any], key: str, path: str, where: str, expected: str) -> Any:
    value = parent.get(key, _ABSENT) if isinstance(parent, dict) else _ABSENT
    if value is _ABSENT:
        raise _damaged(path, f"{where}.{key}", expected, "absent")
    return value


def _check_generator_state(value: Any, path: str, where: str) -> None:
    """A torch CPU generator's state (what Generator.get_state returns): checked by setting it
    on a throwaway generator, which refuses what restoring would refuse."""
    size = torch.Generator().get_state().numel()
    expected = f"a torch CPU generator's state (a uint8 tensor of {size} values)"
    if not isinstance(value, Tensor) or value.dtype != torch.uint8 or value.shape != (size,):
        raise _damaged(path, where, expected, _shown(value))
    try:
        torch.Generator().set_state(value)
    except (RuntimeError, TypeError) as exc:
        raise _damaged(path, where, expected, f"a state torch refuses ({exc})") from None


def _check_rng(rng: Any, path: str, where: str) -> None:
    """What rng_state captured: each part set on a throwaway generator of its library."""
    if not isinstance(rng, dict):
        raise _damaged(path, where, "a dict of torch, numpy, python and cuda states", _shown(rng))
    _check_generator_state(_entry(rng, "torch", path, where, "a torch CPU generator's state"),
                           path, f"{where}.torch")
    numpy_expected = "numpy's MT19937 state (keys: an int64 tensor of 624 values, pos: 0..624)"
    np_state = _entry(rng, "numpy", path, where, numpy_expected)
    if not isinstance(np_state, dict):
        raise _damaged(path, f"{where}.numpy", numpy_expected, _shown(np_state))
    keys = _entry(np_state, "keys", path, f"{where}.numpy", numpy_expected)
    if not isinstance(keys, Tensor) or keys.dtype != torch.int64 or keys.shape != (624,):
        raise _damaged(path, f"{where}.numpy.keys", "an int64 tensor of 624 values",
                       _shown(keys))
    pos = _entry(np_state, "pos", path, f"{where}.numpy", "an int in 0..624")
    # numpy takes any pos and reads past its 624 keys at the next draw
    if isinstance(pos, bool) or not isinstance(pos, int) or not 0 <= pos <= 624:
        raise _damaged(path, f"{where}.numpy.pos", "an int in 0..624", _shown(pos))
    has_gauss = _entry(np_state, "has_gauss", path, f"{where}.numpy", "0 or 1")
    cached = _entry(np_state, "cached_gaussian", path, f"{where}.numpy", "a float")
    try:
        np.random.RandomState().set_state(("MT19937", keys.numpy().astype(np.uint32), pos,
                                           has_gauss, cached))
    except (ValueError, TypeError, IndexError) as exc:
        raise _damaged(path, f"{where}.numpy", numpy_expected,
                       f"a state numpy refuses ({exc})") from None
    python_expected = "Python's random state (version 3, a tensor of 625 integers, gauss_next)"
    py = _entry(rng, "python", path, where, python_expected)
    try:
        random.Random().setstate((py["version"], tuple(int(v) for v in py["state"].tolist()),
                                  py["gauss_next"]))
    except (KeyError, AttributeError, TypeError, ValueError) as exc:
        got = f"a state Python refuses ({exc!r})" if isinstance(py, dict) else _shown(py)
        raise _damaged(path, f"{where}.python", python_expected, got) from None
    cuda = _entry(rng, "cuda", path, where, "a list of CUDA generator states")
    if not isinstance(cuda, (list, tuple)):
        raise _damaged(path, f"{where}.cuda", "a list of CUDA generator states", _shown(cuda))
    for i, s in enumerate(cuda):
        if not isinstance(s, Tensor) or s.dtype != torch.uint8 or s.dim() != 1 or not s.numel():
            raise _damaged(path, f"{where}.cuda[{i}]", "a CUDA generator's state (a 1-D uint8 "
                           "tensor)", _shown(s))


def _check_sampler(sampler: Any, path: str, where: str) -> None:
    expected = "the batch sampler's generator state"
    _check_generator_state(_entry(sampler, "generator", path, where, expected), path,
                           f"{where}.generator")


def _check_random_states(state: Dict[str, Any], path: str) -> None:
    """The sampler and RNG entries (each rank's too) restore, checked before anything loads."""
    _check_sampler(state["sampler"], path, "sampler")
    _check_rng(state["rng"], path, "rng")
    ranks = state.get("ranks") or []
    if not isinstance(ranks, (list, tuple)):
        raise _damaged(path, "ranks", "a list of each rank's rng and sampler", _shown(ranks))
    for i, own in enumerate(ranks):
        if not isinstance(own, dict):
            raise _damaged(path, f"ranks[{i}]", "a dict of rng and sampler", _shown(own))
        _check_sampler(_entry(own, "sampler", path, f"ranks[{i}]", "the rank's sampler state"),
                       path, f"ranks[{i}].sampler")
        _check_rng(_entry(own, "rng", path, f"ranks[{i}]", "the rank's RNG states"), path,
                   f"ranks[{i}].rng")


def _probe_state(optimizer: torch.optim.Optimizer, group: Dict[str, Any]) -> Dict[str, Any] | None:
    """What one step of this optimizer keeps for a parameter of `group`: {key: "elementwise"
    (a tensor of the parameter's shape), "scalar" (one value) or "other"}; None when a probe
    step cannot tell (an optimizer that needs a closure, say)."""
    hyper = {k: v for k, v in group.items() if k != "params"}
    if isinstance(hyper.get("lr"), Tensor):
        hyper["lr"] = float(hyper["lr"])
    # the per-parameter entries are the same without these; with them a probe on the CPU fails
    for flag in ("capturable", "fused", "differentiable"):
        if hyper.get(flag):
            hyper[flag] = False
    param = torch.zeros(2, requires_grad=True)
    try:
        probe = type(optimizer)([param], **hyper)
        param.grad = torch.zeros(2)
        probe.step()
    except Exception:  # noqa: BLE001 - a probe that cannot run only leaves the keys unchecked
        return None
    kinds = {}
    for key, value in probe.state[param].items():
        if isinstance(value, Tensor) and value.shape == param.shape:
            kinds[key] = "elementwise"
        elif isinstance(value, Tensor) and value.numel() == 1 or isinstance(value, (int, float)):
            kinds[key] = "scalar"
        else:
            kinds[key] = "other"
    return kinds


def check_optimizer_state(saved: Any, optimizer: torch.optim.Optimizer, path: str,
                          where: str) -> None:
    """A CheckpointError naming the entry unless `saved` (an optimizer state_dict) loads into
    `optimizer` and steps: its groups hold as many parameters as the optimizer's, its per-parameter
    state names parameters that exist, with the entries one step of this optimizer keeps, each
    moment of its parameter's shape (torch's load_state_dict takes any shape, and the first step
    then fails on a size mismatch)."""
    groups = saved.get("param_groups", _ABSENT) if isinstance(saved, dict) else _ABSENT
    if not isinstance(groups, list):
        raise _damaged(path, f"{where}.param_groups",
                       f"a list of {len(optimizer.param_groups)} parameter groups", _shown(groups))
    if len(groups) != len(optimizer.param_groups):
        raise _damaged(path, f"{where}.param_groups",
                       f"{len(optimizer.param_groups)} parameter groups (the model's)",
                       f"{len(groups)}")
    params: Dict[Any, Tuple[Tensor, Dict[str, Any]]] = {}
    for i, (group, own) in enumerate(zip(groups, optimizer.param_groups)):
        ids = group.get("params") if isinstance(group, dict) else None
        if not isinstance(ids, list) or len(ids) != len(own["params"]):
            got = f"{len(ids)} parameters" if isinstance(ids, list) else _shown(group)
            raise _damaged(path, f"{where}.param_groups[{i}]",
                           f"a group of {len(own['params'])} parameters (the model's)", got)
        for key, p in zip(ids, own["params"]):
            params[key] = (p, own)
    per_param = saved.get("state", _ABSENT)
    if not isinstance(per_param, dict):
        raise _damaged(path, f"{where}.state", "a dict of per-parameter state",
                       _shown(per_param))
    probes: Dict[int, Dict[str, Any] | None] = {}
    for key, entries in per_param.items():
        entry = f"{where}.state.{key}"
        if key not in params:
            known = list(params)
            shown = f"{known[0]}..{known[-1]}" if known else "none"
            raise CheckpointError(f"{path}: the checkpoint's {entry} is damaged: it names no "
                                  f"parameter {key} (the groups hold {shown}); {_DAMAGED_FIX}")
        param, own = params[key]
        if not isinstance(entries, dict):
            raise _damaged(path, entry, "a dict of this parameter's state", _shown(entries))
        if id(own) not in probes:
            probes[id(own)] = _probe_state(optimizer, own)
        kinds = probes[id(own)]
        if kinds is not None and set(entries) != set(kinds):
            raise _damaged(path, entry, f"the entries {sorted(kinds)} that "
                           f"{type(optimizer).__name__} keeps", f"{sorted(entries)}")
        for name, value in entries.items():
            kind = kinds.get(name) if kinds is not None else (
                "elementwise" if isinstance(value, Tensor) and value.numel() > 1 else None)
            if kind == "elementwise" and (not isinstance(value, Tensor)
                                          or value.shape != param.shape):
                raise _damaged(path, f"{entry}.{name}",
                               f"a tensor of its parameter's shape {list(param.shape)}",
                               _shown(value))
            if kind == "scalar" and not (isinstance(value, (int, float)) or (
                    isinstance(value, Tensor) and value.numel() == 1)):
                raise _damaged(path, f"{entry}.{name}", "one value", _shown(value))


def portable_optimizer_state(optimizer_state: Dict[str, Any]) -> Dict[str, Any]:
    """An optimiser state_dict with plain float learning rates: the compiled and captured step
    modes hold the lr in a device tensor, which a run resumed in another mode (or on another
    device) must not inherit."""
    groups = [{**g, "lr": float(g["lr"])} if isinstance(g.get("lr"), Tensor) else g
              for g in optimizer_state["param_groups"]]
    return {**optimizer_state, "param_groups": groups}


def rng_state() -> Dict[str, Any]:
    """The states of the torch (CPU and CUDA), numpy and python `random` generators, as tensors
    and plain values that load with weights_only=True."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_state[0]),
                   "state": torch.tensor(py_state[1], dtype=torch.int64),
                   "gauss_next": py_state[2]},
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def seed_all(seed: int) -> None:
    """Seed the torch, numpy and python `random` generators."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what rng_state captured."""
    torch.set_rng_state(state["torch"].cpu())
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])




def read_checkpoint(path: str, map_location: Any = "cpu", *, check: bool = True) -> Dict[str, Any]:
    """The checkpoint at `path`, checked by check_checkpoint (unless check=False): a file that is
    not ours or holds NaN/inf is a CheckpointError (a ValueError) saying so."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable wgangp_fast checkpoint ({exc})") from None
    return check_checkpoint(state, path) if check else state


def state_is_finite(modules, optimizers) -> bool:
    """Weights, buffers and optimiser state (Adam's moments included) all finite: a NaN in a
    moment is as fatal to a resumed run as one in a weight. None entries of `modules` are
    skipped."""
    for module in modules:
        if module is None:
            continue
        for t in list(module.parameters()) + list(module.buffers()):
            if t.is_floating_point() and not torch.isfinite(t).all():
                return False
    for opt in optimizers:
        for per_param in opt.state.values():
            for t in per_param.values():
                if isinstance(t, Tensor) and t.is_floating_point() \
                        and not torch.isfinite(t).all():
                    return False
    return True


def data_signature(dataset: data_mod.Dataset) -> Dict[str, Any]:
    """What the models were built for and what decoding their samples needs
    (wgangp_fast.train.data.signature)."""
    return data_mod.signature(dataset)


def check_data_matches(state: Dict[str, Any], dataset: data_mod.Dataset, source: str,
                       models: Dict[str, nn.Module]) -> None:
    """The data (described as `source` in messages) and the settings build `models` (name ->
    module) of the checkpoint's shapes; a CheckpointError naming what changed otherwise (instead
    of load_state_dict's size mismatch)."""
    fix = ("resume with the data the run started with, or start a new run on this data "
           "without --resume")
    saved, own = state.get("data"), data_signature(dataset)
    if isinstance(saved, dict):
        if "categories" in saved and "categories" in own:
            if saved.get("columns") != own["columns"]:
                raise CheckpointError(f"{source} no longer matches the checkpoint: its "
                                      f"columns were {saved.get('columns')} and are now "
                                      f"{own['columns']}; {fix}")
            for col, cats in own["categories"].items():
                old = saved["categories"].get(col)
                if old != cats:
                    added = sorted(set(cats) - set(old or ()))
                    removed = sorted(set(old or ()) - set(cats))
                    raise CheckpointError(
                        f"{source} no longer matches the checkpoint: column {col!r} had "
                        f"the categories {old} and now has {cats} (added {added}, removed "
                        f"{removed}), which changes the models' input and output width; "
                        f"{fix}")
        if saved.get("shape") != own["shape"]:
            raise CheckpointError(f"{source} no longer matches the checkpoint: a sample had "
                                  f"shape {saved.get('shape')} and now has {own['shape']}; "
                                  f"{fix}")
    # checkpoints without a signature, and settings that change the models: by the weights
    for name, module in models.items():
        mine = module.state_dict()
        theirs = state[name]
        for key in sorted(set(mine) | set(theirs)):
            a, b = mine.get(key), theirs.get(key)
            if a is None or b is None or tuple(a.shape) != tuple(b.shape):
                shown = lambda t: "absent" if t is None else list(t.shape)  # noqa: E731
                raise CheckpointError(
                    f"the checkpoint's {name} does not fit the model that {source} and "
                    f"these settings build: {key} is {shown(b)} in the checkpoint and "
                    f"{shown(a)} here (did the data change since the checkpoint was "
                    f"written?); {fix}")
