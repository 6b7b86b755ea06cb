// Schedule-Free AdamW (train mode: param holds y) for the CuPy backend. The math is
// kernels/rules.py `schedulefree_adamw`, line for line; the coefficients (the averaging weight
// ckp1 from the scalar states lr_max and weight_sum) are rules.schedulefree_adamw_scalars.
#include "common.cuh"

template <typename M, bool MAXIMIZE, bool WEIGHT_DECAY>
__device__ __forceinline__ void schedulefree_adamw_rule(M& p, M g, M& z, M& exp_avg_sq, M ckp1,
                                                        M y_coef, M lr, M beta2,
                                                        M one_minus_beta2, M inv_bc2,
                                                        M eps, M weight_decay, M one) {
    if (MAXIMIZE) g = -g;
    exp_avg_sq = beta2 * exp_avg_sq + one_minus_beta2 * g * g;
    g = g / (root(exp_avg_sq * inv_bc2) + eps);
    if (WEIGHT_DECAY) g = g + weight_decay * p;
    p = lerp(p, z, ckp1, one - ckp1);
    p = p + y_coef * g;
    z = z - lr * g;
}

template <typename TP, typename TG, typename TS, typename TE, typename M, int VEC,
          int PMODE, bool SR, bool MAXIMIZE, bool WEIGHT_DECAY, bool EMA>
__global__ void schedulefree_adamw(TP* __restrict__ param, const TG* __restrict__ grad,
                                   TS* __restrict__ z, TS* __restrict__ exp_avg_sq, long long n,
                                   M ckp1, M y_coef, M lr, M beta2, M one_minus_beta2,
                                   M inv_bc2, M eps, M weight_decay, M one,
                                   TE* __restrict__ ema, M ema_weight, M ema_rest, M ema_first,
                                   M* __restrict__ master, TP* __restrict__ comp,
                                   unsigned int sr_key,
                                   long long sr_offset) {
    each<VEC, TS>(n, [&](long long i, auto width) {
        constexpr int N = decltype(width)::value;
        Param<N, PMODE, SR, TP, M> P(param, master, comp, i, sr_key, sr_offset);
        Pack<TG, N> G = load<N>(grad, i);
        Pack<TS, N> Z = load<N>(z, i), V = load<N>(exp_avg_sq, i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            M p = P.value(k), zz = get(Z.v[k]);
            M v = get(V.v[k]);
            schedulefree_adamw_rule<M, MAXIMIZE, WEIGHT_DECAY>(
                p, get(G.v[k]), zz, v, ckp1, y_coef, lr, beta2, one_minus_beta2,
                inv_bc2, eps, weight_decay, one);
            P.set(k, p);
            put(Z.v[k], zz);
            put(V.v[k], v);
        }
        P.store(param, master, comp, i);
        ema_update<EMA>(ema, i, P, ema_weight, ema_rest, ema_first);
        store<N>(z, i, Z);
        store<N>(exp_avg_sq, i, V);
    });
}
