import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tensors are tiny: one thread is faster, and two OpenMP threads crawl on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
