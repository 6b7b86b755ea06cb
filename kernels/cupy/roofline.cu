// Same-traffic reference kernel: reads param, grad and N_STATE state arrays once and writes
// param and the states once, one add per written element. The ceiling a fused update of the
// same traffic is measured against (benchmarks/gpu.py).
#include "common.cuh"

template <typename T, int VEC, int N_STATE>
__global__ void roofline(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ s0,
                         T* __restrict__ s1, T* __restrict__ s2, long long n) {
    grid_stride<VEC>(n, [&](long long i, auto width) {
        constexpr int N = decltype(width)::value;
        Pack<T, N> P = load<N>(param, i), G = load<N>(grad, i), A, B, C;
        if (N_STATE > 0) A = load<N>(s0, i);
        if (N_STATE > 1) B = load<N>(s1, i);
        if (N_STATE > 2) C = load<N>(s2, i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            P.v[k] = P.v[k] + G.v[k];
            if (N_STATE > 0) A.v[k] = A.v[k] + G.v[k];
            if (N_STATE > 1) B.v[k] = B.v[k] + G.v[k];
            if (N_STATE > 2) C.v[k] = C.v[k] + G.v[k];
        }
        store<N>(param, i, P);
        if (N_STATE > 0) store<N>(s0, i, A);
        if (N_STATE > 1) store<N>(s1, i, B);
        if (N_STATE > 2) store<N>(s2, i, C);
    });
}
