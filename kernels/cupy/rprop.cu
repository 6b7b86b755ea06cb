// Rprop for the CuPy backend. The math is kernels/rules.py `rprop`, line for line; the
// coefficients are rules.rprop_scalars, computed on the host.
#include "common.cuh"

template <typename M, bool MAXIMIZE>
__device__ __forceinline__ void rprop_rule(M& p, M g, M& prev, M& step_size, M eta_minus,
                                           M eta_plus, M step_size_min, M step_size_max,
                                           M one) {
    if (MAXIMIZE) g = -g;
    const M zero = one - one;
    // torch.sign: 0 for NaN as for zero.
    M s = g * prev;
    if (s > zero) {
        step_size = step_size * eta_plus;
    } else if (s < zero) {
        step_size = step_size * eta_minus;
        g = zero;
    }
    // torch.clamp: NaN stays NaN; min above max gives max.
    if (step_size < step_size_min) step_size = step_size_min;
    if (step_size > step_size_max) step_size = step_size_max;
    if (g > zero) p = p - step_size;
    else if (g < zero) p = p + step_size;
    else p = p - zero * step_size;
    prev = g;
}

template <typename TP, typename TG, typename TS, typename TE, typename M, int VEC,
          int PMODE, bool SR, bool MAXIMIZE, bool EMA>
__global__ void rprop(TP* __restrict__ param, const TG* __restrict__ grad, TS* __restrict__ prev,
                      TS* __restrict__ step_size, long long n, M eta_minus, M eta_plus,
                      M step_size_min, M step_size_max, M one,
                      TE* __restrict__ ema, M ema_weight, M ema_rest, M ema_first,
                      M* __restrict__ master, TP* __restrict__ comp, unsigned int sr_key,
                      long long sr_offset) {
    each<VEC, TS>(n, [&](long long i, auto width) {
        constexpr int N = decltype(width)::value;
        Param<N, PMODE, SR, TP, M> P(param, master, comp, i, sr_key, sr_offset);
        Pack<TG, N> G = load<N>(grad, i);
        Pack<TS, N> R = load<N>(prev, i), S = load<N>(step_size, i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            M p = P.value(k), r = get(R.v[k]), s = get(S.v[k]);
            rprop_rule<M, MAXIMIZE>(p, get(G.v[k]), r, s, eta_minus, eta_plus,
                                    step_size_min, step_size_max, one);
            P.set(k, p);
            put(R.v[k], r);
            put(S.v[k], s);
        }
        P.store(param, master, comp, i);
        ema_update<EMA>(ema, i, P, ema_weight, ema_rest, ema_first);
        store<N>(prev, i, R);
        store<N>(step_size, i, S);
    });
}
