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

template <typename TP, typename TG, typename TS, typename TE, typename M, int VEC,
          int PMODE, bool SR, bool MAXIMIZE, bool WEIGHT_DECAY, bool EMA>
__global__ void ademamix(TP* __restrict__ param, const TG* __restrict__ grad,
                         TS* __restrict__ exp_avg, TS* __restrict__ exp_avg_sq,
                         TS* __restrict__ exp_avg_slow, long long n, M one_minus_beta1, M beta2,
                         M one_minus_beta2, M one_minus_beta3, M inv_bc1, M inv_bc2_sqrt,
                         M alpha, M eps, M neg_lr, M decay, M one,
                         TE* __restrict__ ema, M ema_weight, M ema_rest, M ema_first,
                         M* __restrict__ master, TP* __restrict__ comp, unsigned int sr_key,
                         long long sr_offset) {
    each<VEC, TS>(n, [&](long long i, auto width) {
        constexpr int N = decltype(width)::value;
        Param<N, PMODE, SR, TP, M> P(param, master, comp, i, sr_key, sr_offset);
        Pack<TG, N> G = load<N>(grad, i);
        Pack<TS, N> E = load<N>(exp_avg, i), V = load<N>(exp_avg_sq, i);
        Pack<TS, N> S = load<N>(exp_avg_slow, i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            M p = P.value(k), m = get(E.v[k]), v = get(V.v[k]);
            M s = get(S.v[k]);
            ademamix_rule<M, MAXIMIZE, WEIGHT_DECAY>(
                p, get(G.v[k]), m, v, s, one_minus_beta1, beta2, one_minus_beta2,
                one_minus_beta3, inv_bc1, inv_bc2_sqrt, alpha, eps, neg_lr, decay, one);
            P.set(k, p);
            put(E.v[k], m);
            put(V.v[k], v);
            put(S.v[k], s);
        }
        P.store(param, master, comp, i);
        ema_update<EMA>(ema, i, P, ema_weight, ema_rest, ema_first);
        store<N>(exp_avg, i, E);
        store<N>(exp_avg_sq, i, V);
        store<N>(exp_avg_slow, i, S);
    });
}
