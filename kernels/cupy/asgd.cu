// ASGD for the CuPy backend. The math is kernels/rules.py `asgd`, line for line; the
// coefficients are rules.asgd_scalars, computed on the host from the scalar states eta and mu.
#include "common.cuh"

template <typename M, bool MAXIMIZE, bool WEIGHT_DECAY>
__device__ __forceinline__ void asgd_rule(M& p, M g, M& ax, M decay, M neg_eta, M mu,
                                          M copy, M weight_decay, M zero) {
    if (MAXIMIZE) g = -g;
    if (WEIGHT_DECAY) g = g + weight_decay * p;
    p = p * decay;
    p = p + neg_eta * g;
    // copy (mu = 1): ax = p exactly; z is +-0 for every ax (the CPU rule's select, see rules.py).
    M averaged = ax + (p - ax) * mu;
    M z = zero * ax;
    z = z == z ? z : zero;
    ax = copy > z ? p : averaged;
}

template <typename TP, typename TG, typename TS, typename TE, typename M, int VEC,
          int PMODE, bool SR, bool MAXIMIZE, bool WEIGHT_DECAY, bool EMA>
__global__ void asgd(TP* __restrict__ param, const TG* __restrict__ grad, TS* __restrict__ ax,
                     long long n, M decay, M neg_eta, M mu, M copy, M weight_decay, M zero,
                     TE* __restrict__ ema, M ema_weight, M ema_rest, M ema_first,
                     M* __restrict__ master, TP* __restrict__ comp, unsigned int sr_key,
                     long long sr_offset) {
    each<VEC, TS>(n, [&](long long i, auto width) {
        constexpr int N = decltype(width)::value;
        Param<N, PMODE, SR, TP, M> P(param, master, comp, i, sr_key, sr_offset);
        Pack<TG, N> G = load<N>(grad, i);
        Pack<TS, N> A = load<N>(ax, i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            M p = P.value(k), a = get(A.v[k]);
            asgd_rule<M, MAXIMIZE, WEIGHT_DECAY>(p, get(G.v[k]), a, decay, neg_eta,
                                                 mu, copy, weight_decay, zero);
            P.set(k, p);
            put(A.v[k], a);
        }
        P.store(param, master, comp, i);
        ema_update<EMA>(ema, i, P, ema_weight, ema_rest, ema_first);
        store<N>(ax, i, A);
    });
}
