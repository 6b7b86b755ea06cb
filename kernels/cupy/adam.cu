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
template <typename T, typename M, int VEC, bool AMSGRAD, bool MAXIMIZE, bool WEIGHT_DECAY,
          bool DECOUPLED, bool EMA>
__global__ void adam(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ exp_avg,
                     T* __restrict__ exp_avg_sq, T* __restrict__ max_exp_avg_sq, long long n,
                     M one_minus_beta1, M beta2, M one_minus_beta2, M step_size, M inv_bc2_sqrt,
                     M eps, M decay, M one,
                     T* __restrict__ ema, M ema_weight, M ema_rest, M ema_first) {
    grid_stride<VEC>(n, [&](long long i, auto width) {
        constexpr int N = decltype(width)::value;
        Pack<T, N> P = load<N>(param, i), G = load<N>(grad, i);
        Pack<T, N> E = load<N>(exp_avg, i), S = load<N>(exp_avg_sq, i), X;
        if (AMSGRAD) X = load<N>(max_exp_avg_sq, i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            M p = static_cast<M>(P.v[k]), m = static_cast<M>(E.v[k]), v = static_cast<M>(S.v[k]);
            M vmax = AMSGRAD ? static_cast<M>(X.v[k]) : v;
            adam_rule<M, AMSGRAD, MAXIMIZE, WEIGHT_DECAY, DECOUPLED>(
                p, static_cast<M>(G.v[k]), m, v, vmax, one_minus_beta1, beta2, one_minus_beta2,
                step_size, inv_bc2_sqrt, eps, decay, one);
            P.v[k] = static_cast<T>(p);
            E.v[k] = static_cast<T>(m);
            S.v[k] = static_cast<T>(v);
            if (AMSGRAD) X.v[k] = static_cast<T>(vmax);
        }
        store<N>(param, i, P);
        ema_update<EMA>(ema, i, P, ema_weight, ema_rest, ema_first);
        store<N>(exp_avg, i, E);
        store<N>(exp_avg_sq, i, S);
        if (AMSGRAD) store<N>(max_exp_avg_sq, i, X);
    });
}
