"""The ``numba-cuda`` backend: validated device arrays in, Numba-CUDA kernels launched.

Accepts Numba device arrays, CuPy arrays, torch CUDA tensors and any other object with
``__cuda_array_interface__``, zero-copy (``numba.cuda.as_cuda_array``), and the arrays of
Numba's CUDA simulator. Kernels run on the default stream; numba.cuda waits for the stream an
array's producer names in its interface before using it.

The per-call coefficients are computed on the host in float64 by ``rules.*_scalars`` and cast
to the arrays' dtype, so a float32 kernel does float32 arithmetic only.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from numba import config, cuda

from . import _device
from .kernels import cuda as kernels
from .kernels import rules

_kernels: dict[tuple[Any, ...], Any] = {}

if config.ENABLE_CUDASIM:
    _is_numba_array: Callable[[Any], bool] = _device.is_simulated
else:
    from numba.cuda.cudadrv.devicearray import is_cuda_ndarray

    _is_numba_array = is_cuda_ndarray


def _view(a: Any) -> Any:
    """A 1-D numba device array over the memory of ``a`` (no copy)."""
    if not _is_numba_array(a):
        a = cuda.as_cuda_array(_device.unwrap(a))
    return a if a.ndim == 1 else a.reshape(a.size)


def _cast(dtype: Any, values: tuple[float, ...]) -> list[Any]:
    t = np.dtype(dtype).type
    return [t(v) for v in values]


def _launch(key: tuple[Any, ...], factory: Callable[..., Any], flags: dict[str, bool],
            arrays: list[Any], scalars: tuple[float, ...]) -> None:
    k = _kernels.get(key)
    if k is None:
        k = _kernels[key] = factory(**flags)
    views = [_view(a) for a in arrays]
    n = views[0].size
    blocks, threads = kernels.launch_config(n)
    k[blocks, threads](*views, *_cast(views[0].dtype, scalars))


def sgd(param: Any, grad: Any, momentum_buffer: Any = None, *, step: int, lr: float,
        momentum: float, dampening: float, nesterov: bool, weight_decay: float,
        maximize: bool) -> None:
    flags = dict(momentum=momentum != 0, nesterov=nesterov, maximize=maximize,
                 weight_decay=weight_decay != 0)
    buf = param if momentum_buffer is None else momentum_buffer
    _launch(("sgd", *flags.values()), kernels.sgd_kernel, flags, [param, grad, buf],
            rules.sgd_scalars(step, lr, momentum, dampening, weight_decay))


def adagrad(param: Any, grad: Any, state_sum: Any, *, step: int, lr: float, lr_decay: float,
            weight_decay: float, eps: float, maximize: bool) -> None:
    flags = dict(maximize=maximize, weight_decay=weight_decay != 0)
    _launch(("adagrad", *flags.values()), kernels.adagrad_kernel, flags,
            [param, grad, state_sum], rules.adagrad_scalars(step, lr, lr_decay, weight_decay, eps))


def rmsprop(param: Any, grad: Any, square_avg: Any, momentum_buffer: Any = None,
            grad_avg: Any = None, *, step: int, lr: float, alpha: float, eps: float,
            weight_decay: float, momentum: float, centered: bool, maximize: bool) -> None:
    flags = dict(maximize=maximize, weight_decay=weight_decay != 0, momentum=momentum > 0,
                 centered=centered)
    buf = param if momentum_buffer is None else momentum_buffer
    gavg = param if grad_avg is None else grad_avg
    _launch(("rmsprop", *flags.values()), kernels.rmsprop_kernel, flags,
            [param, grad, square_avg, buf, gavg],
            rules.rmsprop_scalars(lr, alpha, eps, weight_decay, momentum))


def _adam(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any,
          step: int, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
          amsgrad: bool, maximize: bool, decoupled: bool) -> None:
    flags = dict(amsgrad=amsgrad, maximize=maximize, weight_decay=weight_decay != 0,
                 decoupled=decoupled)
    vmax = exp_avg_sq if max_exp_avg_sq is None else max_exp_avg_sq
    _launch(("adam", *flags.values()), kernels.adam_kernel, flags,
            [param, grad, exp_avg, exp_avg_sq, vmax],
            rules.adam_scalars(step, lr, beta1, beta2, eps, weight_decay, decoupled))


def adam(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any = None, *,
         step: int, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
         amsgrad: bool, maximize: bool) -> None:
    _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps,
          weight_decay, amsgrad, maximize, False)


def adamw(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any = None, *,
          step: int, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
          amsgrad: bool, maximize: bool) -> None:
    _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps,
          weight_decay, amsgrad, maximize, True)


def adadelta(param: Any, grad: Any, square_avg: Any, acc_delta: Any, *, step: int, lr: float,
             rho: float, eps: float, weight_decay: float, maximize: bool) -> None:
    flags = dict(maximize=maximize, weight_decay=weight_decay != 0)
    _launch(("adadelta", *flags.values()), kernels.adadelta_kernel, flags,
            [param, grad, square_avg, acc_delta],
            rules.adadelta_scalars(lr, rho, eps, weight_decay))


def roofline(param: Any, grad: Any, states: list[Any]) -> None:
    """The same-traffic kernel over param, grad and up to three states (benchmarks only)."""
    views = [_view(a) for a in (param, grad, *states)]
    p = views[0]
    pad = views[2:] + [p] * (3 - len(states))
    k = _kernels.get(key := ("roofline", len(states)))
    if k is None:
        k = _kernels[key] = kernels.roofline_kernel(len(states))
    blocks, threads = kernels.launch_config(p.size)
    k[blocks, threads](p, views[1], *pad)


def to_device(a: np.ndarray) -> Any:
    """A device copy of a host array (for ``fastopt check`` and the benchmarks)."""
    return cuda.to_device(np.ascontiguousarray(a))


def to_host(a: Any) -> np.ndarray:
    out: np.ndarray = _view(a).copy_to_host().reshape(np.shape(a) if hasattr(a, "shape") else -1)
    return out


def synchronize() -> None:
    cuda.synchronize()
