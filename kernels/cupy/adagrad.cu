// Adagrad for the CuPy backend. The math is kernels/rules.py `adagrad`; the coefficients are
// rules.adagrad_scalars, computed on the host.
#include "common.cuh"

template <typename M, bool MAXIMIZE, bool WEIGHT_DECAY>
__device__ __forceinline__ void adagrad_rule(M& p, M g, M& state_sum, M clr, M weight_decay,
                                             M eps) {
    if (MAXIMIZE) g = -g;
    if (WEIGHT_DECAY) g = g + weight_decay * p;
    state_sum = state_sum + g * g;
    p = p - clr * (g / (root(state_sum) + eps));
}

template <typename T, typename M, int VEC, bool MAXIMIZE, bool WEIGHT_DECAY, bool EMA>
__global__ void adagrad(T* __restrict__ param, const T* __restrict__ grad,
                        T* __restrict__ state_sum, long long n, M clr, M weight_decay, M eps,
                        T* __restrict__ ema, M ema_weight, M ema_rest, M ema_first) {
    grid_stride<VEC>(n, [&](long long i, auto width) {
        constexpr int N = decltype(width)::value;
        Pack<T, N> P = load<N>(param, i), G = load<N>(grad, i), S = load<N>(state_sum, i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            M p = static_cast<M>(P.v[k]), s = static_cast<M>(S.v[k]);
            adagrad_rule<M, MAXIMIZE, WEIGHT_DECAY>(p, static_cast<M>(G.v[k]), s, clr,
                                                    weight_decay, eps);
            P.v[k] = static_cast<T>(p);
            S.v[k] = static_cast<T>(s);
        }
        store<N>(param, i, P);
        ema_update<EMA>(ema, i, P, ema_weight, ema_rest, ema_first);
        store<N>(state_sum, i, S);
    });
}
