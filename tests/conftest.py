"""Shared pytest hooks.

WGANGP_FAST_FAILURE_LOG=PATH appends every failing test's report to PATH the moment it fails. The
GPU check (scripts/gpu_check.sh) sets it: a crash of the interpreter (a segfault in a kernel)
loses pytest's end-of-run summary and its junit file, but not the failures already written.
"""

from __future__ import annotations

import os

import pytest
import torch

_LOG = os.environ.get("WGANGP_FAST_FAILURE_LOG")


def pytest_runtest_logreport(report):
    if not _LOG or not report.failed:
        return
    with open(_LOG, "a", encoding="utf-8") as fh:
        fh.write(f"=== FAILED {report.nodeid} ({report.when})\n{report.longreprtext}\n\n")
        fh.flush()
        os.fsync(fh.fileno())


@pytest.fixture
def one_thread():
    """One intra-op thread for the test. The models of the trainer, integration and step tests
    are tiny: a second thread buys nothing, and on a busy 2-core machine OpenMP workers spin
    against each other and slow every op down many times."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
