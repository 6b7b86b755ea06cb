// SGD with heavy-ball / Nesterov momentum for the CuPy backend. The math is kernels/rules.py
// `sgd`; the coefficients are rules.sgd_scalars, computed on the host.
#include "common.cuh"

template <typename M, bool MOMENTUM, bool NESTEROV, bool MAXIMIZE, bool WEIGHT_DECAY>
__device__ __forceinline__ void sgd_rule(M& p, M g, M& buf, M lr, M momentum,
                                         M one_minus_dampening, M weight_decay, M first) {
    if (MAXIMIZE) g = -g;
    if (WEIGHT_DECAY) g = g + weight_decay * p;
    if (MOMENTUM) {
        // On step 1 the buffer is the gradient; its old contents are never read.
        buf = first ? g : momentum * buf + one_minus_dampening * g;
        if (NESTEROV) g = g + momentum * buf;
        else g = buf;
    }
    p = p - lr * g;
}

// momentum_buffer is not touched unless MOMENTUM.
template <typename T, typename M, int VEC, bool MOMENTUM, bool NESTEROV, bool MAXIMIZE,
          bool WEIGHT_DECAY, bool EMA>
__global__ void sgd(T* __restrict__ param, const T* __restrict__ grad,
                    T* __restrict__ momentum_buffer, long long n, M lr, M momentum,
                    M one_minus_dampening, M weight_decay, M first,
                    T* __restrict__ ema, M ema_weight, M ema_rest, M ema_first) {
    grid_stride<VEC>(n, [&](long long i, auto width) {
        constexpr int N = decltype(width)::value;
        Pack<T, N> P = load<N>(param, i), G = load<N>(grad, i), B;
        if (MOMENTUM && !first) B = load<N>(momentum_buffer, i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            M p = static_cast<M>(P.v[k]);
            M buf = (MOMENTUM && !first) ? static_cast<M>(B.v[k]) : p;
            sgd_rule<M, MOMENTUM, NESTEROV, MAXIMIZE, WEIGHT_DECAY>(
                p, static_cast<M>(G.v[k]), buf, lr, momentum, one_minus_dampening, weight_decay,
                first);
            P.v[k] = static_cast<T>(p);
            if (MOMENTUM) B.v[k] = static_cast<T>(buf);
        }
        store<N>(param, i, P);
        ema_update<EMA>(ema, i, P, ema_weight, ema_rest, ema_first);
        if (MOMENTUM) store<N>(momentum_buffer, i, B);
    });
}
