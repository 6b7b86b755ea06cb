// The weight EMA swapped in for evaluation, and back, for the CuPy backend: param and ema
// exchange their contents (kernels/rules.py `ema_swap`). The gradient slot is not read.
#include "common.cuh"

template <typename T, typename M, int VEC>
__global__ void ema_swap(T* __restrict__ param, const T* __restrict__ unused,
                         T* __restrict__ ema, long long n, M one) {
    grid_stride<VEC>(n, [&](long long i, auto width) {
        constexpr int N = decltype(width)::value;
        Pack<T, N> P = load<N>(param, i), E = load<N>(ema, i);
        store<N>(param, i, E);
        store<N>(ema, i, P);
    });
}
