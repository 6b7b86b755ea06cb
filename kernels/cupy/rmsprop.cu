// RMSprop (optionally centered, optionally with momentum) for the CuPy backend. The math is
// kernels/rules.py `rmsprop`; the coefficients are rules.rmsprop_scalars, computed on the host.
#include "common.cuh"

template <typename M, bool MAXIMIZE, bool WEIGHT_DECAY, bool MOMENTUM, bool CENTERED>
__device__ __forceinline__ void rmsprop_rule(M& p, M g, M& square_avg, M& buf, M& grad_avg, M lr,
                                             M alpha, M one_minus_alpha, M eps, M weight_decay,
                                             M momentum, M one) {
    if (MAXIMIZE) g = -g;
    if (WEIGHT_DECAY) g = g + weight_decay * p;
    square_avg = alpha * square_avg + one_minus_alpha * g * g;
    M avg;
    if (CENTERED) {
        grad_avg = lerp(grad_avg, g, one_minus_alpha, one - one_minus_alpha);
        avg = root(square_avg - grad_avg * grad_avg) + eps;
    } else {
        avg = root(square_avg) + eps;
    }
    if (MOMENTUM) {
        buf = momentum * buf + g / avg;
        p = p - lr * buf;
    } else {
        p = p - lr * (g / avg);
    }
}

// momentum_buffer and grad_avg are not touched unless MOMENTUM / CENTERED.
template <typename T, typename M, int VEC, bool MAXIMIZE, bool WEIGHT_DECAY, bool MOMENTUM,
          bool CENTERED, bool EMA>
__global__ void rmsprop(T* __restrict__ param, const T* __restrict__ grad,
                        T* __restrict__ square_avg, T* __restrict__ momentum_buffer,
                        T* __restrict__ grad_avg, long long n, M lr, M alpha,
                        M one_minus_alpha, M eps, M weight_decay, M momentum, M one,
                        T* __restrict__ ema, M ema_weight, M ema_rest, M ema_first) {
    grid_stride<VEC>(n, [&](long long i, auto width) {
        constexpr int N = decltype(width)::value;
        Pack<T, N> P = load<N>(param, i), G = load<N>(grad, i), S = load<N>(square_avg, i), B, A;
        if (MOMENTUM) B = load<N>(momentum_buffer, i);
        if (CENTERED) A = load<N>(grad_avg, i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            M p = static_cast<M>(P.v[k]), s = static_cast<M>(S.v[k]);
            M buf = MOMENTUM ? static_cast<M>(B.v[k]) : p;
            M gavg = CENTERED ? static_cast<M>(A.v[k]) : p;
            rmsprop_rule<M, MAXIMIZE, WEIGHT_DECAY, MOMENTUM, CENTERED>(
                p, static_cast<M>(G.v[k]), s, buf, gavg, lr, alpha, one_minus_alpha, eps,
                weight_decay, momentum, one);
            P.v[k] = static_cast<T>(p);
            S.v[k] = static_cast<T>(s);
            if (MOMENTUM) B.v[k] = static_cast<T>(buf);
            if (CENTERED) A.v[k] = static_cast<T>(gavg);
        }
        store<N>(param, i, P);
        ema_update<EMA>(ema, i, P, ema_weight, ema_rest, ema_first);
        store<N>(square_avg, i, S);
        if (MOMENTUM) store<N>(momentum_buffer, i, B);
        if (CENTERED) store<N>(grad_avg, i, A);
    });
}
