"""Fixtures shared by the tests; helper modules live in ``tests/support`` (import as ``support.*``)."""
import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def single_thread():
    """For tests of many small tensor operations: one thread is faster than several that
    compete for the cores, and it keeps a shared test machine responsive."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The tiny synthetic dataset with supervision (:mod:`support.training_fixtures`), built once
    per session: ``{"data", "identity", "deformation"}`` folders."""
    from support.training_fixtures import build_tiny_dataset

    return build_tiny_dataset(tmp_path_factory.mktemp("tiny_synthetic"))
