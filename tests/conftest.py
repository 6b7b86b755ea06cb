import ctypes
import os
import sys

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
