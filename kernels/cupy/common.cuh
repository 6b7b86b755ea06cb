// Shared pieces of the CuPy kernels: vector packs, storage/math conversion, the grid-stride loop.
//
// Every kernel is a template over T (the storage type of the arrays), M (the type the math runs
// in), VEC (elements per vector load: 16 bytes of T when every array is 16-byte aligned, else 1)
// and the algorithm's option flags. There are no floating-point literals in these sources: the
// per-call coefficients arrive as arguments of type M, so a float kernel does float math only.
#pragma once

// Correctly rounded square roots (NVRTC and nvcc default to IEEE sqrt and division); named
// overloads, so the float kernel never reaches a double sqrt through overload resolution.
__device__ __forceinline__ float root(float x) { return sqrtf(x); }
__device__ __forceinline__ double root(double x) { return sqrt(x); }

// torch.lerp's formula (kernels/rules.py `lerp`): exact at weight 0 and weight 1.
template <typename M>
__device__ __forceinline__ M lerp(M start, M end, M weight, M one_minus_weight) {
    const M diff = end - start;
    return weight < one_minus_weight ? start + weight * diff : end - diff * one_minus_weight;
}

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
    T v[N];
};

template <int N>
struct Width {
    static constexpr int value = N;
};

template <int N, typename T>
__device__ __forceinline__ Pack<T, N> load(const T* a, long long i) {
    return *reinterpret_cast<const Pack<T, N>*>(a + i);
}

template <int N, typename T>
__device__ __forceinline__ void store(T* a, long long i, const Pack<T, N>& x) {
    *reinterpret_cast<Pack<T, N>*>(a + i) = x;
}

// Calls body(i, Width<VEC>()) for every whole pack of VEC elements starting at i, striding over
// the grid, then body(i, Width<1>()) for each of the last n % VEC elements. Indices are 64-bit.
template <int VEC, typename Body>
__device__ __forceinline__ void grid_stride(long long n, Body body) {
    const long long first = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    const long long packs = n / VEC;
    for (long long k = first; k < packs; k += stride) {
        body(k * VEC, Width<VEC>());
    }
    if (VEC > 1) {
        const long long i = packs * VEC + first;
        if (i < n) {
            body(i, Width<1>());
        }
    }
}

// The weight EMA fused after an algorithm's update (kernels/rules.py `ema`): when EMA, each
// element of `ema` moves toward the parameter just stored, P (as stored: type T), by
// torch.lerp with `weight` = 1 - decay and `rest` = 1 - weight; `first` nonzero copies P.
// Every algorithm's kernel takes (T* ema, M ema_weight, M ema_rest, M ema_first) last and
// calls this right after storing the parameter.
template <bool EMA, int N, typename T, typename M>
__device__ __forceinline__ void ema_update(T* __restrict__ ema, long long i, const Pack<T, N>& P,
                                           M weight, M rest, M first) {
    if (EMA) {
        Pack<T, N> E = load<N>(ema, i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            const M p = static_cast<M>(P.v[k]);
            E.v[k] = first != M(0) ? P.v[k]
                                   : static_cast<T>(lerp(static_cast<M>(E.v[k]), p, weight, rest));
        }
        store<N>(ema, i, E);
    }
}
