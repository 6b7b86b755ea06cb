"""GPU arrays as fastopt sees them: their CUDA array interface, device and memory range.

Nothing here imports CuPy, numba.cuda or torch: an array's own type answers every question.
Three kinds of objects count as device arrays:

- anything with ``__cuda_array_interface__`` (CuPy arrays, Numba device arrays, torch CUDA
  tensors; a torch tensor that requires grad is read through ``.detach()``, which shares its
  memory);
- the arrays of Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), which wrap host memory
  and stand for device 0, so that the whole GPU path runs on machines without a GPU.

bfloat16 has no typestr of its own: torch CUDA bfloat16 tensors have no interface (fastopt reads
their int16 view), ml_dtypes-backed arrays (CuPy 14, Numba, the simulator) say ``<V2``.
:func:`interface` reports both with the typestr ``"bf16"``, fastopt's own mark.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SIM_MODULE = "numba.cuda.simulator"


def is_simulated(a: Any) -> bool:
    return type(a).__module__.startswith(SIM_MODULE)


def is_torch(a: Any) -> bool:
    return type(a).__module__.startswith("torch")


def is_cupy(a: Any) -> bool:
    return type(a).__module__.startswith("cupy")


BF16 = "bf16"  # the typestr interface() gives bfloat16 arrays


def _torch_bf16(a: Any) -> bool:
    return str(getattr(a, "dtype", "")) == "torch.bfloat16"


def unwrap(a: Any) -> Any:
    """The object to read the interface of: a torch tensor without its autograd wrapper, a
    bfloat16 one as its int16 view (same memory)."""
    if is_torch(a):
        if getattr(a, "requires_grad", False):
            a = a.detach()
        if _torch_bf16(a):
            import torch

            a = a.view(torch.int16)
    return a


def interface(a: Any) -> dict[str, Any] | None:
    """The CUDA array interface of a device array, or None for anything else.

    For simulator arrays it is made from the wrapped host array's interface.
    """
    if is_simulated(a):
        host = getattr(a, "_ary", None)
        if not isinstance(host, np.ndarray):
            return None
        ai = host.__array_interface__
        return {"shape": ai["shape"], "typestr": _typestr(ai["typestr"], host), "data": ai["data"],
                "strides": ai["strides"], "version": 3}
    if not hasattr(type(a), "__cuda_array_interface__"):
        return None
    try:
        cai: dict[str, Any] = unwrap(a).__cuda_array_interface__
    except (AttributeError, RuntimeError, TypeError):
        return None
    if is_torch(a) and _torch_bf16(a):
        return {**cai, "typestr": BF16}
    typestr = _typestr(cai["typestr"], a)
    return cai if typestr == cai["typestr"] else {**cai, "typestr": typestr}


def _typestr(typestr: str, a: Any) -> str:
    """BF16 for a bfloat16 array (two bytes of void named bfloat16), else ``typestr``."""
    if typestr[1:] == "V2" and str(getattr(a, "dtype", "")) == "bfloat16":
        return BF16
    return typestr


def device_id(a: Any, cai: dict[str, Any]) -> int | None:
    """The ordinal of the GPU holding ``a``, or None where the array cannot say."""
    if is_simulated(a):
        return 0
    dev = getattr(a, "device", None)
    if is_torch(a) and dev is not None:
        return None if dev.index is None else int(dev.index)
    ordinal = getattr(dev, "id", None)  # CuPy's Device
    if isinstance(ordinal, int):
        return ordinal
    # Numba device arrays and other producers: ask the driver which device owns the pointer.
    ptr = cai["data"][0]
    if not ptr:
        return None
    try:
        from cuda.bindings import driver

        attr = driver.CUpointer_attribute.CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL
        err, ordinal = driver.cuPointerGetAttribute(attr, ptr)
    except Exception:  # no cuda-bindings, or no driver library to load
        return None
    if err != driver.CUresult.CUDA_SUCCESS:
        return None
    return int(ordinal)


def c_contiguous(shape: tuple[int, ...], strides: tuple[int, ...] | None, itemsize: int) -> bool:
    """Whether strides describe a C-contiguous layout (extent-1 axes may have any stride)."""
    if strides is None:
        return True
    expected = itemsize
    for extent, stride in zip(reversed(shape), reversed(strides)):
        if extent != 1 and stride != expected:
            return False
        expected *= extent
    return True
