// RAdam for the CuPy backend. The math is kernels/rules.py `radam`, line for line; the
// coefficients are rules.radam_scalars, computed on the host.
#include "common.cuh"

template <typename M, bool MAXIMIZE, bool WEIGHT_DECAY, bool DECOUPLED>
__device__ __forceinline__ void radam_rule(M& p, M g, M& exp_avg, M& exp_avg_sq,
                                           M one_minus_beta1, M beta2, M one_minus_beta2,
                                           M bias_correction1, M lr, M sqrt_bc2, M eps, M rect,
                                           M rectified, M decay, M one) {
    if (MAXIMIZE) g = -g;
    if (WEIGHT_DECAY) {
        if (DECOUPLED) p = p * decay;
        else g = g + decay * p;
    }
    exp_avg = lerp(exp_avg, g, one_minus_beta1, one - one_minus_beta1);
    exp_avg_sq = beta2 * exp_avg_sq + one_minus_beta2 * g * g;
    M update = exp_avg / bias_correction1 * lr;
    if (rectified != one - one) update = update * (one / (root(exp_avg_sq) + eps) * sqrt_bc2) * rect;
    p = p - update;
}

template <typename T, typename M, int VEC, bool MAXIMIZE, bool WEIGHT_DECAY,
          bool DECOUPLED, bool EMA>
__global__ void radam(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ exp_avg,
                      T* __restrict__ exp_avg_sq, long long n, M one_minus_beta1, M beta2,
                      M one_minus_beta2, M bias_correction1, M lr, M sqrt_bc2, M eps, M rect,
                      M rectified, M decay, M one,
                      T* __restrict__ ema, M ema_weight, M ema_rest, M ema_first) {
    grid_stride<VEC>(n, [&](long long i, auto width) {
        constexpr int N = decltype(width)::value;
        Pack<T, N> P = load<N>(param, i), G = load<N>(grad, i);
        Pack<T, N> E = load<N>(exp_avg, i), V = load<N>(exp_avg_sq, i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            M p = static_cast<M>(P.v[k]), m = static_cast<M>(E.v[k]), v = static_cast<M>(V.v[k]);
            radam_rule<M, MAXIMIZE, WEIGHT_DECAY, DECOUPLED>(
                p, static_cast<M>(G.v[k]), m, v, one_minus_beta1, beta2, one_minus_beta2,
                bias_correction1, lr, sqrt_bc2, eps, rect, rectified, decay, one);
            P.v[k] = static_cast<T>(p);
            E.v[k] = static_cast<T>(m);
            V.v[k] = static_cast<T>(v);
        }
        store<N>(param, i, P);
        ema_update<EMA>(ema, i, P, ema_weight, ema_rest, ema_first);
        store<N>(exp_avg, i, E);
        store<N>(exp_avg_sq, i, V);
    });
}
