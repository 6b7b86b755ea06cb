import ctypes
import os
import sys

import pytest

# The test table lives beside the tests; make it importable as a plain module.
sys.path.insert(0, os.path.dirname(__file__))


def _driver_present() -> bool:
    try:
        ctypes.CDLL("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1")
    except OSError:
        return False
    return True


# Without an NVIDIA driver the numba-cuda kernels run under Numba's CUDA simulator, so every
# GPU code path but the CuPy launch is exercised in CI. With a driver they run on the GPU.
# Set NUMBA_ENABLE_CUDASIM yourself to choose either way. Must happen before numba.cuda loads.
if "NUMBA_ENABLE_CUDASIM" not in os.environ and not _driver_present():
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true",
                     help="also run the tests marked slow (minutes each)")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` run with --runslow, or when a -m expression selects by marker
    (``pytest -m slow``, ``pytest -m gpu`` on a GPU machine); the default run skips them."""
    if config.getoption("--runslow") or config.getoption("markexpr"):
        return
    import pytest

    skip = pytest.mark.skip(reason="slow: run with --runslow (or -m slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def sigint_default():
    """SIGINT raising KeyboardInterrupt for the test, whatever the process inherited (a
    background job started by a non-interactive shell ignores SIGINT)."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
