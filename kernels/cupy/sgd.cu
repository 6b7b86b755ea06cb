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
template <typename TP, typename TG, typename TS, typename TE, typename M, int VEC,
          int PMODE, bool SR, bool MOMENTUM, bool NESTEROV, bool MAXIMIZE,
          bool WEIGHT_DECAY, bool EMA>
__global__ void sgd(TP* __restrict__ param, const TG* __restrict__ grad,
                    TS* __restrict__ momentum_buffer, long long n, M lr, M momentum,
                    M one_minus_dampening, M weight_decay, M first,
                    TE* __restrict__ ema, M ema_weight, M ema_rest, M ema_first,
                    M* __restrict__ master, TP* __restrict__ comp, unsigned int sr_key,
                    long long sr_offset) {
    each<VEC, TS>(n, [&](long long i, auto width) {
        constexpr int N = decltype(width)::value;
        Param<N, PMODE, SR, TP, M> P(param, master, comp, i, sr_key, sr_offset);
        Pack<TG, N> G = load<N>(grad, i);
        Pack<TS, N> B;
        if (MOMENTUM && !first) B = load<N>(momentum_buffer, i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            M p = P.value(k);
            M buf = (MOMENTUM && !first) ? get(B.v[k]) : p;
            sgd_rule<M, MOMENTUM, NESTEROV, MAXIMIZE, WEIGHT_DECAY>(
                p, get(G.v[k]), buf, lr, momentum, one_minus_dampening, weight_decay,
                first);
            P.set(k, p);
            if (MOMENTUM) put(B.v[k], buf);
        }
        P.store(param, master, comp, i);
        ema_update<EMA>(ema, i, P, ema_weight, ema_rest, ema_first);
        if (MOMENTUM) store<N>(momentum_buffer, i, B);
    });
}
