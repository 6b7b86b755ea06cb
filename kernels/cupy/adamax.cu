// Adamax for the CuPy backend. The math is kernels/rules.py `adamax`, line for line; the
// coefficients are rules.adamax_scalars, computed on the host.
#include "common.cuh"

template <typename M, bool MAXIMIZE, bool WEIGHT_DECAY>
__device__ __forceinline__ void adamax_rule(M& p, M g, M& exp_avg, M& exp_inf,
                                            M one_minus_beta1, M beta2, M eps, M weight_decay,
                                            M clr, M one) {
    if (MAXIMIZE) g = -g;
    if (WEIGHT_DECAY) g = g + weight_decay * p;
    exp_avg = lerp(exp_avg, g, one_minus_beta1, one - one_minus_beta1);
    // NaN-propagating maximum, as torch.maximum.
    M decayed = beta2 * exp_inf, bound = fabs(g) + eps;
    if (decayed != decayed || bound != bound) exp_inf = decayed + bound;
    else exp_inf = decayed > bound ? decayed : bound;
    p = p - clr * (exp_avg / exp_inf);
}

template <typename TP, typename TG, typename TS, typename TE, typename M, int VEC,
          int PMODE, bool SR, bool MAXIMIZE, bool WEIGHT_DECAY, bool EMA>
__global__ void adamax(TP* __restrict__ param, const TG* __restrict__ grad,
                       TS* __restrict__ exp_avg,
                       TS* __restrict__ exp_inf, long long n, M one_minus_beta1, M beta2, M eps,
                       M weight_decay, M clr, M one,
                       TE* __restrict__ ema, M ema_weight, M ema_rest, M ema_first,
                       M* __restrict__ master, TP* __restrict__ comp, unsigned int sr_key,
                       long long sr_offset) {
    each<VEC, TS>(n, [&](long long i, auto width) {
        constexpr int N = decltype(width)::value;
        Param<N, PMODE, SR, TP, M> P(param, master, comp, i, sr_key, sr_offset);
        Pack<TG, N> G = load<N>(grad, i);
        Pack<TS, N> E = load<N>(exp_avg, i), U = load<N>(exp_inf, i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            M p = P.value(k), m = get(E.v[k]), u = get(U.v[k]);
            adamax_rule<M, MAXIMIZE, WEIGHT_DECAY>(p, get(G.v[k]), m, u,
                                                   one_minus_beta1, beta2, eps, weight_decay,
                                                   clr, one);
            P.set(k, p);
            put(E.v[k], m);
            put(U.v[k], u);
        }
        P.store(param, master, comp, i);
        ema_update<EMA>(ema, i, P, ema_weight, ema_rest, ema_first);
        store<N>(exp_avg, i, E);
        store<N>(exp_inf, i, U);
    });
}
