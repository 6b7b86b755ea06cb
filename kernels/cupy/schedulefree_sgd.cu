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

template <typename T, typename M, int VEC, bool MAXIMIZE, bool WEIGHT_DECAY, bool EMA>
__global__ void schedulefree_sgd(T* __restrict__ param, const T* __restrict__ grad,
                                 T* __restrict__ z, long long n, M ckp1, M y_coef, M lr,
                                 M weight_decay, M one,
                                 T* __restrict__ ema, M ema_weight, M ema_rest, M ema_first) {
    grid_stride<VEC>(n, [&](long long i, auto width) {
        constexpr int N = decltype(width)::value;
        Pack<T, N> P = load<N>(param, i), G = load<N>(grad, i), Z = load<N>(z, i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            M p = static_cast<M>(P.v[k]), zz = static_cast<M>(Z.v[k]);
            schedulefree_sgd_rule<M, MAXIMIZE, WEIGHT_DECAY>(p, static_cast<M>(G.v[k]), zz, ckp1,
                                                             y_coef, lr, weight_decay, one);
            P.v[k] = static_cast<T>(p);
            Z.v[k] = static_cast<T>(zz);
        }
        store<N>(param, i, P);
        ema_update<EMA>(ema, i, P, ema_weight, ema_rest, ema_first);
        store<N>(z, i, Z);
    });
}
