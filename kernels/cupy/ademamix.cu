// AdEMAMix for the CuPy backend. The math is kernels/rules.py `ademamix`, line for line; the
// coefficients (the alpha and beta3 warmups included) are rules.ademamix_scalars, on the host.
#include "common.cuh"

template <typename M, bool MAXIMIZE, bool WEIGHT_DECAY>
__device__ __forceinline__ void ademamix_rule(M& p, M g, M& exp_avg, M& exp_avg_sq,
                                              M& exp_avg_slow, M one_minus_beta1, M beta2,
                                              M one_minus_beta2, M one_minus_beta3,
                                              M inv_bc1, M inv_bc2_sqrt, M alpha, M eps,
                                              M neg_lr, M decay, M one) {
    if (MAXIMIZE) g = -g;
    if (WEIGHT_DECAY) p = p * decay;
    exp_avg = lerp(exp_avg, g, one_minus_beta1, one - one_minus_beta1);
    exp_avg_sq = beta2 * exp_avg_sq + one_minus_beta2 * g * g;
    exp_avg_slow = lerp(exp_avg_slow, g, one_minus_beta3, one - one_minus_beta3);
    M denom = root(exp_avg_sq) * inv_bc2_sqrt + eps;
    p = p + neg_lr * ((exp_avg * inv_bc1 + alpha * exp_avg_slow) / denom);
}

template <typename T, typename M, int VEC, bool MAXIMIZE, bool WEIGHT_DECAY, bool EMA>
__global__ void ademamix(T* __restrict__ param, const T* __restrict__ grad,
                         T* __restrict__ exp_avg, T* __restrict__ exp_avg_sq,
                         T* __restrict__ exp_avg_slow, long long n, M one_minus_beta1, M beta2,
                         M one_minus_beta2, M one_minus_beta3, M inv_bc1, M inv_bc2_sqrt,
                         M alpha, M eps, M neg_lr, M decay, M one,
                         T* __restrict__ ema, M ema_weight, M ema_rest, M ema_first) {
    grid_stride<VEC>(n, [&](long long i, auto width) {
        constexpr int N = decltype(width)::value;
        Pack<T, N> P = load<N>(param, i), G = load<N>(grad, i);
        Pack<T, N> E = load<N>(exp_avg, i), V = load<N>(exp_avg_sq, i);
        Pack<T, N> S = load<N>(exp_avg_slow, i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            M p = static_cast<M>(P.v[k]), m = static_cast<M>(E.v[k]), v = static_cast<M>(V.v[k]);
            M s = static_cast<M>(S.v[k]);
            ademamix_rule<M, MAXIMIZE, WEIGHT_DECAY>(
                p, static_cast<M>(G.v[k]), m, v, s, one_minus_beta1, beta2, one_minus_beta2,
                one_minus_beta3, inv_bc1, inv_bc2_sqrt, alpha, eps, neg_lr, decay, one);
            P.v[k] = static_cast<T>(p);
            E.v[k] = static_cast<T>(m);
            V.v[k] = static_cast<T>(v);
            S.v[k] = static_cast<T>(s);
        }
        store<N>(param, i, P);
        ema_update<EMA>(ema, i, P, ema_weight, ema_rest, ema_first);
        store<N>(exp_avg, i, E);
        store<N>(exp_avg_sq, i, V);
        store<N>(exp_avg_slow, i, S);
    });
}
