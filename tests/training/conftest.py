import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """These tensors are tiny: every training test runs torch on one thread (tests/conftest.py)."""
