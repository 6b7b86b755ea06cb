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

template <typename T, typename M, int VEC, bool MAXIMIZE, bool WEIGHT_DECAY, bool EMA>
__global__ void adadelta(T* __restrict__ param, const T* __restrict__ grad,
                         T* __restrict__ square_avg, T* __restrict__ acc_delta, long long n, M lr,
                         M rho, M one_minus_rho, M eps, M weight_decay,
                         T* __restrict__ ema, M ema_weight, M ema_rest, M ema_first) {
    grid_stride<VEC>(n, [&](long long i, auto width) {
        constexpr int N = decltype(width)::value;
        Pack<T, N> P = load<N>(param, i), G = load<N>(grad, i);
        Pack<T, N> S = load<N>(square_avg, i), D = load<N>(acc_delta, i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            M p = static_cast<M>(P.v[k]), s = static_cast<M>(S.v[k]), d = static_cast<M>(D.v[k]);
            adadelta_rule<M, MAXIMIZE, WEIGHT_DECAY>(p, static_cast<M>(G.v[k]), s, d, lr, rho,
                                                     one_minus_rho, eps, weight_decay);
            P.v[k] = static_cast<T>(p);
            S.v[k] = static_cast<T>(s);
            D.v[k] = static_cast<T>(d);
        }
        store<N>(param, i, P);
        ema_update<EMA>(ema, i, P, ema_weight, ema_rest, ema_first);
        store<N>(square_avg, i, S);
        store<N>(acc_delta, i, D);
    });
}
