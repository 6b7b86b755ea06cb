// Adadelta for the CuPy backend. The math is kernels/rules.py `adadelta`; the coefficients are
// rules.adadelta_scalars, computed on the host.
#include "common.cuh"

template <typename M, bool MAXIMIZE, bool WEIGHT_DECAY>
__device__ __forceinline__ void adadelta_rule(M& p, M g, M& square_avg, M& acc_delta, M lr, M rho,
                                              M one_minus_rho, M eps, M weight_decay) {
    if (MAXIMIZE) g = -g;
    if (WEIGHT_DECAY) g = g + weight_decay * p;
    square_avg = rho * square_avg + one_minus_rho * g * g;
    const M std = root(square_avg + eps);
    const M delta = root(acc_delta + eps) / std * g;
    acc_delta = rho * acc_delta + one_minus_rho * delta * delta;
    p = p - lr * delta;
}

template <typename TP, typename TG, typename TS, typename TE, typename M, int VEC,
          int PMODE, bool SR, bool MAXIMIZE, bool WEIGHT_DECAY, bool EMA>
__global__ void adadelta(TP* __restrict__ param, const TG* __restrict__ grad,
                         TS* __restrict__ square_avg, TS* __restrict__ acc_delta, long long n, M lr,
                         M rho, M one_minus_rho, M eps, M weight_decay,
                         TE* __restrict__ ema, M ema_weight, M ema_rest, M ema_first,
                         M* __restrict__ master, TP* __restrict__ comp, unsigned int sr_key,
                         long long sr_offset) {
    each<VEC, TS>(n, [&](long long i, auto width) {
        constexpr int N = decltype(width)::value;
        Param<N, PMODE, SR, TP, M> P(param, master, comp, i, sr_key, sr_offset);
        Pack<TG, N> G = load<N>(grad, i);
        Pack<TS, N> S = load<N>(square_avg, i), D = load<N>(acc_delta, i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            M p = P.value(k), s = get(S.v[k]), d = get(D.v[k]);
            adadelta_rule<M, MAXIMIZE, WEIGHT_DECAY>(p, get(G.v[k]), s, d, lr, rho,
                                                     one_minus_rho, eps, weight_decay);
            P.set(k, p);
            put(S.v[k], s);
            put(D.v[k], d);
        }
        P.store(param, master, comp, i);
        ema_update<EMA>(ema, i, P, ema_weight, ema_rest, ema_first);
        store<N>(square_avg, i, S);
        store<N>(acc_delta, i, D);
    });
}
