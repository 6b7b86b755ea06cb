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
template <typename TP, typename TG, typename TS, typename TE, typename M, int VEC,
          int PMODE, bool SR, bool MAXIMIZE, bool WEIGHT_DECAY, bool MOMENTUM,
          bool CENTERED, bool EMA>
__global__ void rmsprop(TP* __restrict__ param, const TG* __restrict__ grad,
                        TS* __restrict__ square_avg, TS* __restrict__ momentum_buffer,
                        TS* __restrict__ grad_avg, long long n, M lr, M alpha,
                        M one_minus_alpha, M eps, M weight_decay, M momentum, M one,
                        TE* __restrict__ ema, M ema_weight, M ema_rest, M ema_first,
                        M* __restrict__ master, TP* __restrict__ comp, unsigned int sr_key,
                        long long sr_offset) {
    each<VEC, TS>(n, [&](long long i, auto width) {
        constexpr int N = decltype(width)::value;
        Param<N, PMODE, SR, TP, M> P(param, master, comp, i, sr_key, sr_offset);
        Pack<TG, N> G = load<N>(grad, i);
        Pack<TS, N> S = load<N>(square_avg, i), B, A;
        if (MOMENTUM) B = load<N>(momentum_buffer, i);
        if (CENTERED) A = load<N>(grad_avg, i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            M p = P.value(k), s = get(S.v[k]);
            M buf = MOMENTUM ? get(B.v[k]) : p;
            M gavg = CENTERED ? get(A.v[k]) : p;
            rmsprop_rule<M, MAXIMIZE, WEIGHT_DECAY, MOMENTUM, CENTERED>(
                p, get(G.v[k]), s, buf, gavg, lr, alpha, one_minus_alpha, eps,
                weight_decay, momentum, one);
            P.set(k, p);
            put(S.v[k], s);
            if (MOMENTUM) put(B.v[k], buf);
            if (CENTERED) put(A.v[k], gavg);
        }
        P.store(param, master, comp, i);
        ema_update<EMA>(ema, i, P, ema_weight, ema_rest, ema_first);
        store<N>(square_avg, i, S);
        if (MOMENTUM) store<N>(momentum_buffer, i, B);
        if (CENTERED) store<N>(grad_avg, i, A);
    });
}
