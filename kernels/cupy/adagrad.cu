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

template <typename TP, typename TG, typename TS, typename TE, typename M, int VEC,
          int PMODE, bool SR, bool MAXIMIZE, bool WEIGHT_DECAY, bool EMA>
__global__ void adagrad(TP* __restrict__ param, const TG* __restrict__ grad,
                        TS* __restrict__ state_sum, long long n, M clr, M weight_decay, M eps,
                        TE* __restrict__ ema, M ema_weight, M ema_rest, M ema_first,
                        M* __restrict__ master, TP* __restrict__ comp, unsigned int sr_key,
                        long long sr_offset) {
    each<VEC, TS>(n, [&](long long i, auto width) {
        constexpr int N = decltype(width)::value;
        Param<N, PMODE, SR, TP, M> P(param, master, comp, i, sr_key, sr_offset);
        Pack<TG, N> G = load<N>(grad, i);
        Pack<TS, N> S = load<N>(state_sum, i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            M p = P.value(k), s = get(S.v[k]);
            adagrad_rule<M, MAXIMIZE, WEIGHT_DECAY>(p, get(G.v[k]), s, clr,
                                                    weight_decay, eps);
            P.set(k, p);
            put(S.v[k], s);
        }
        P.store(param, master, comp, i);
        ema_update<EMA>(ema, i, P, ema_weight, ema_rest, ema_first);
        store<N>(state_sum, i, S);
    });
}
