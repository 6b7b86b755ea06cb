// Schedule-Free SGD (train mode: param holds y) for the CuPy backend. The math is
// kernels/rules.py `schedulefree_sgd`, line for line; the coefficients are
// rules.schedulefree_sgd_scalars, computed on the host.
#include "common.cuh"

template <typename M, bool MAXIMIZE, bool WEIGHT_DECAY>
__device__ __forceinline__ void schedulefree_sgd_rule(M& p, M g, M& z, M ckp1, M y_coef, M lr,
                                                      M weight_decay, M one) {
    if (MAXIMIZE) g = -g;
    if (WEIGHT_DECAY) g = g + weight_decay * p;
    p = lerp(p, z, ckp1, one - ckp1);
    p = p + y_coef * g;
    z = z - lr * g;
}

template <typename TP, typename TG, typename TS, typename TE, typename M, int VEC,
          int PMODE, bool SR, bool MAXIMIZE, bool WEIGHT_DECAY, bool EMA>
__global__ void schedulefree_sgd(TP* __restrict__ param, const TG* __restrict__ grad,
                                 TS* __restrict__ z, long long n, M ckp1, M y_coef, M lr,
                                 M weight_decay, M one,
                                 TE* __restrict__ ema, M ema_weight, M ema_rest, M ema_first,
                                 M* __restrict__ master, TP* __restrict__ comp, unsigned int sr_key,
                                 long long sr_offset) {
    each<VEC, TS>(n, [&](long long i, auto width) {
        constexpr int N = decltype(width)::value;
        Param<N, PMODE, SR, TP, M> P(param, master, comp, i, sr_key, sr_offset);
        Pack<TG, N> G = load<N>(grad, i);
        Pack<TS, N> Z = load<N>(z, i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            M p = P.value(k), zz = get(Z.v[k]);
            schedulefree_sgd_rule<M, MAXIMIZE, WEIGHT_DECAY>(p, get(G.v[k]), zz, ckp1,
                                                             y_coef, lr, weight_decay, one);
            P.set(k, p);
            put(Z.v[k], zz);
        }
        P.store(param, master, comp, i);
        ema_update<EMA>(ema, i, P, ema_weight, ema_rest, ema_first);
        store<N>(z, i, Z);
    });
}
