// The Schedule-Free train/eval switch for the CuPy backend: param = lerp(param, z, weight)
// (kernels/rules.py `schedulefree_swap`); z arrives in the gradient's slot.
#include "common.cuh"

template <typename T, typename M, int VEC>
__global__ void schedulefree_swap(T* __restrict__ param, const T* __restrict__ z, long long n,
                                  M weight, M one) {
    grid_stride<VEC>(n, [&](long long i, auto width) {
        constexpr int N = decltype(width)::value;
        Pack<T, N> P = load<N>(param, i), Z = load<N>(z, i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            M p = static_cast<M>(P.v[k]);
            P.v[k] = static_cast<T>(lerp(p, static_cast<M>(Z.v[k]), weight, one - weight));
        }
        store<N>(param, i, P);
    });
}
