import shutil

import pytest

from structmat.speed_c.build import compile_driver


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """``<root>/speed_c``, so that ``STRUCTMAT_CACHE_DIR=<root>`` finds the same binaries."""
    return tmp_path_factory.mktemp("structmat_cache") / "speed_c"


@pytest.fixture(scope="session")
def driver(cache_dir):
    """The C driver, compiled once per test session (per xdist worker) with the default flags."""
    if shutil.which("cc") is None:
        pytest.skip("no C compiler 'cc' on PATH")
    return compile_driver(cache_dir=cache_dir)
