// ADOPT for the CuPy backend. The math is kernels/rules.py `adopt`, line for line; the
// coefficients are rules.adopt_scalars, computed on the host.
#include "common.cuh"

template <typename M, bool MAXIMIZE, bool WEIGHT_DECAY, bool DECOUPLE>
__device__ __forceinline__ void adopt_rule(M& p, M g, M& exp_avg, M& exp_avg_sq,
                                           M one_minus_beta1, M beta2, M one_minus_beta2, M eps,
                                           M clip, M neg_lr, M neg_lr_wd, M weight_decay,
                                           M first, M one) {
    if (MAXIMIZE) g = -g;
    if (WEIGHT_DECAY && !DECOUPLE) g = g + weight_decay * p;
    if (first != one - one) {
        exp_avg_sq = exp_avg_sq + g * g;
        return;
    }
    if (WEIGHT_DECAY && DECOUPLE) p = p + neg_lr_wd * p;
    // torch.clamp: NaN stays NaN.
    M denom = root(exp_avg_sq);
    if (denom < eps) denom = eps;
    M normed = g / denom;
    if (normed < -clip) normed = -clip;
    if (normed > clip) normed = clip;
    exp_avg = lerp(exp_avg, normed, one_minus_beta1, one - one_minus_beta1);
    p = p + neg_lr * exp_avg;
    exp_avg_sq = beta2 * exp_avg_sq + one_minus_beta2 * g * g;
}

template <typename TP, typename TG, typename TS, typename TE, typename M, int VEC,
          int PMODE, bool SR, bool MAXIMIZE, bool WEIGHT_DECAY,
          bool DECOUPLE, bool EMA>
__global__ void adopt(TP* __restrict__ param, const TG* __restrict__ grad, TS* __restrict__ exp_avg,
                      TS* __restrict__ exp_avg_sq, long long n, M one_minus_beta1, M beta2,
                      M one_minus_beta2, M eps, M clip, M neg_lr, M neg_lr_wd, M weight_decay,
                      M first, M one,
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
            adopt_rule<M, MAXIMIZE, WEIGHT_DECAY, DECOUPLE>(
                p, get(G.v[k]), m, v, one_minus_beta1, beta2, one_minus_beta2, eps,
                clip, neg_lr, neg_lr_wd, weight_decay, first, one);
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
