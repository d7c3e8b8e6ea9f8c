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


@pytest.fixture(scope="session")
def host_library_path(tmp_path_factory):
    """libdcn_deploy_host.so: the built one (./dev test builds it), else built host-only (a C++ compiler and cmake,
    well under a minute) into a temporary folder, once per session, so that a bare ``pytest`` checks the host
    code too instead of skipping it. That folder is then $DCN_DEPLOY_PLUGIN_DIR for the session, so that the ops'
    own lookup (the CPU forward's dispatch) finds the library as well."""
    import os
    from pathlib import Path

    from dcn_deploy.plugin import library

    path = library.find_library("host")
    if path is not None:
        yield Path(path)
        return
    if not library.repo_root().joinpath("CMakeLists.txt").is_file():
        pytest.skip("libdcn_deploy_host.so is not built and there is no source checkout to build it from")
    built = Path(library.build_libraries(tmp_path_factory.mktemp("dcn_host_build"), cuda=False).libraries["host"])
    previous = os.environ.get(library.ENV_DIR)
    os.environ[library.ENV_DIR] = str(built.parent)
    _forget_found_libraries()
    yield built
    if previous is None:
        os.environ.pop(library.ENV_DIR, None)
    else:
        os.environ[library.ENV_DIR] = previous
    _forget_found_libraries()


def _forget_found_libraries() -> None:
    """The ops cache which compiled library they found: look again after the search path changed."""
    import sys

    paths = sys.modules.get("dcn_deploy.ops.native_paths")
    for name in ("_cpu_library", "_cuda_library"):
        cached = getattr(paths, name, None)
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()
