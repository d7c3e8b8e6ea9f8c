"""Shared test fixtures. Keep this file small: helpers that only one test file uses belong in that file."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _seed_torch():
    """Every test starts from the same torch seed, so a failure reproduces when the test is run alone."""
    try:
        import torch
    except ImportError:  # tests that need no torch still run
        yield
        return
    torch.manual_seed(0)
    yield


@pytest.fixture
def rng():
    """A numpy generator with a fixed seed, fresh for each test."""
    import numpy as np

    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one intra-op thread for a module (use with ``pytest.mark.usefixtures``): on a busy 2-core machine,
    2 OpenMP threads make small convolutions ~20x slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
