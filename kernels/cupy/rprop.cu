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

template <typename T, typename M, int VEC, bool MAXIMIZE, bool EMA>
__global__ void rprop(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ prev,
                      T* __restrict__ step_size, long long n, M eta_minus, M eta_plus,
                      M step_size_min, M step_size_max, M one,
                      T* __restrict__ ema, M ema_weight, M ema_rest, M ema_first) {
    grid_stride<VEC>(n, [&](long long i, auto width) {
        constexpr int N = decltype(width)::value;
        Pack<T, N> P = load<N>(param, i), G = load<N>(grad, i);
        Pack<T, N> R = load<N>(prev, i), S = load<N>(step_size, i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            M p = static_cast<M>(P.v[k]), r = static_cast<M>(R.v[k]), s = static_cast<M>(S.v[k]);
            rprop_rule<M, MAXIMIZE>(p, static_cast<M>(G.v[k]), r, s, eta_minus, eta_plus,
                                    step_size_min, step_size_max, one);
            P.v[k] = static_cast<T>(p);
            R.v[k] = static_cast<T>(r);
            S.v[k] = static_cast<T>(s);
        }
        store<N>(param, i, P);
        ema_update<EMA>(ema, i, P, ema_weight, ema_rest, ema_first);
        store<N>(prev, i, R);
        store<N>(step_size, i, S);
    });
}
