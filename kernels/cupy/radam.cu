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

template <typename TP, typename TG, typename TS, typename TE, typename M, int VEC,
          int PMODE, bool SR, bool MAXIMIZE, bool WEIGHT_DECAY,
          bool DECOUPLED, bool EMA>
__global__ void radam(TP* __restrict__ param, const TG* __restrict__ grad,
                      TS* __restrict__ exp_avg, TS* __restrict__ exp_avg_sq, long long n,
                      M one_minus_beta1, M beta2, M one_minus_beta2, M bias_correction1,
                      M lr, M sqrt_bc2, M eps, M rect, M rectified, M decay, M one,
                      TE* __restrict__ ema, M ema_weight, M ema_rest, M ema_first,
                      M* __restrict__ master, TP* __restrict__ comp, unsigned int sr_key,
                      long long sr_offset) {
    each<VEC, TS>(n, [&](long long i, auto width) {
        constexpr int N = decltype(width)::value;
        Param<N, PMODE, SR, TP, M> P(param, master, comp, i, sr_key, sr_offset);
        Pack<TG, N> G = load<N>(grad, i);
        Pack<TS, N> E = load<N>(exp_avg, i), V = load<N>(exp_avg_sq, i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            M p = P.value(k), m = get(E.v[k]), v = get(V.v[k]);
            radam_rule<M, MAXIMIZE, WEIGHT_DECAY, DECOUPLED>(
                p, get(G.v[k]), m, v, one_minus_beta1, beta2, one_minus_beta2,
                bias_correction1, lr, sqrt_bc2, eps, rect, rectified, decay, one);
            P.set(k, p);
            put(E.v[k], m);
            put(V.v[k], v);
        }
        P.store(param, master, comp, i);
        ema_update<EMA>(ema, i, P, ema_weight, ema_rest, ema_first);
        store<N>(exp_avg, i, E);
        store<N>(exp_avg_sq, i, V);
    });
}
