// Adam / AdamW for the CuPy backend. The math is kernels/rules.py `adam`, line for line; the
// coefficients are rules.adam_scalars, computed on the host.
#include "common.cuh"

template <typename M, bool AMSGRAD, bool MAXIMIZE, bool WEIGHT_DECAY, bool DECOUPLED>
__device__ __forceinline__ void adam_rule(M& p, M g, M& exp_avg, M& exp_avg_sq, M& max_exp_avg_sq,
                                          M one_minus_beta1, M beta2, M one_minus_beta2,
                                          M step_size, M inv_bc2_sqrt, M eps, M decay,
                                          M one) {
    if (MAXIMIZE) g = -g;
    if (WEIGHT_DECAY) {
        if (DECOUPLED) p = p * decay;
        else g = g + decay * p;
    }
    exp_avg = lerp(exp_avg, g, one_minus_beta1, one - one_minus_beta1);
    exp_avg_sq = beta2 * exp_avg_sq + one_minus_beta2 * g * g;
    M denom;
    if (AMSGRAD) {
        // NaN-propagating maximum, as torch.maximum.
        if (!(max_exp_avg_sq >= exp_avg_sq) && max_exp_avg_sq == max_exp_avg_sq) {
            max_exp_avg_sq = exp_avg_sq;
        }
        denom = root(max_exp_avg_sq) * inv_bc2_sqrt + eps;
    } else {
        denom = root(exp_avg_sq) * inv_bc2_sqrt + eps;
    }
    p = p - step_size * (exp_avg / denom);
}

// max_exp_avg_sq is not touched unless AMSGRAD.
template <typename TP, typename TG, typename TS, typename TE, typename M, int VEC,
          int PMODE, bool SR, bool AMSGRAD, bool MAXIMIZE, bool WEIGHT_DECAY,
          bool DECOUPLED, bool EMA>
__global__ void adam(TP* __restrict__ param, const TG* __restrict__ grad, TS* __restrict__ exp_avg,
                     TS* __restrict__ exp_avg_sq, TS* __restrict__ max_exp_avg_sq, long long n,
                     M one_minus_beta1, M beta2, M one_minus_beta2, M step_size, M inv_bc2_sqrt,
                     M eps, M decay, M one,
                     TE* __restrict__ ema, M ema_weight, M ema_rest, M ema_first,
                     M* __restrict__ master, TP* __restrict__ comp, unsigned int sr_key,
                     long long sr_offset) {
    each<VEC, TS>(n, [&](long long i, auto width) {
        constexpr int N = decltype(width)::value;
        Param<N, PMODE, SR, TP, M> P(param, master, comp, i, sr_key, sr_offset);
        Pack<TG, N> G = load<N>(grad, i);
        Pack<TS, N> E = load<N>(exp_avg, i), S = load<N>(exp_avg_sq, i), X;
        if (AMSGRAD) X = load<N>(max_exp_avg_sq, i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            M p = P.value(k), m = get(E.v[k]), v = get(S.v[k]);
            M vmax = AMSGRAD ? get(X.v[k]) : v;
            adam_rule<M, AMSGRAD, MAXIMIZE, WEIGHT_DECAY, DECOUPLED>(
                p, get(G.v[k]), m, v, vmax, one_minus_beta1, beta2, one_minus_beta2,
                step_size, inv_bc2_sqrt, eps, decay, one);
            P.set(k, p);
            put(E.v[k], m);
            put(S.v[k], v);
            if (AMSGRAD) put(X.v[k], vmax);
        }
        P.store(param, master, comp, i);
        ema_update<EMA>(ema, i, P, ema_weight, ema_rest, ema_first);
        store<N>(exp_avg, i, E);
        store<N>(exp_avg_sq, i, S);
        if (AMSGRAD) store<N>(max_exp_avg_sq, i, X);
    });
}
