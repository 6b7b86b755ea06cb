// Lion for the CuPy backend. The math is kernels/rules.py `lion`, line for line; the
// coefficients are rules.lion_scalars, computed on the host.
#include "common.cuh"

template <typename M, bool MAXIMIZE, bool WEIGHT_DECAY>
__device__ __forceinline__ void lion_rule(M& p, M g, M& exp_avg, M lr, M decay, M beta1,
                                          M one_minus_beta1, M beta2, M one_minus_beta2) {
    if (MAXIMIZE) g = -g;
    if (WEIGHT_DECAY) p = p * decay;
    M c = beta1 * exp_avg + one_minus_beta1 * g;
    M zero = lr - lr;
    // sign(c) with sign(0) = 0 and NaN kept.
    M update = c > zero ? lr : (c < zero ? -lr : c * lr);
    p = p - update;
    exp_avg = beta2 * exp_avg + one_minus_beta2 * g;
}

template <typename TP, typename TG, typename TS, typename TE, typename M, int VEC,
          int PMODE, bool SR, bool MAXIMIZE, bool WEIGHT_DECAY, bool EMA>
__global__ void lion(TP* __restrict__ param, const TG* __restrict__ grad, TS* __restrict__ exp_avg,
                     long long n, M lr, M decay, M beta1, M one_minus_beta1, M beta2,
                     M one_minus_beta2,
                     TE* __restrict__ ema, M ema_weight, M ema_rest, M ema_first,
                     M* __restrict__ master, TP* __restrict__ comp, unsigned int sr_key,
                     long long sr_offset) {
    each<VEC, TS>(n, [&](long long i, auto width) {
        constexpr int N = decltype(width)::value;
        Param<N, PMODE, SR, TP, M> P(param, master, comp, i, sr_key, sr_offset);
        Pack<TG, N> G = load<N>(grad, i);
        Pack<TS, N> E = load<N>(exp_avg, i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            M p = P.value(k), m = get(E.v[k]);
            lion_rule<M, MAXIMIZE, WEIGHT_DECAY>(p, get(G.v[k]), m, lr, decay, beta1,
                                                 one_minus_beta1, beta2, one_minus_beta2);
            P.set(k, p);
            put(E.v[k], m);
        }
        P.store(param, master, comp, i);
        ema_update<EMA>(ema, i, P, ema_weight, ema_rest, ema_first);
        store<N>(exp_avg, i, E);
    });
}
