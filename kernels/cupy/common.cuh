// Shared pieces of the CuPy kernels: storage formats, vector packs, the parameter's store, the
// grid-stride loop, the fused weight EMA.
//
// The algorithms' kernels are templates over the storage type of each array role -- TP the
// parameter, TG the gradient, TS the states, TE the weight EMA: float, double, or the 16-bit bit
// patterns bf16 and f16 below -- M (the type the math runs in: double for double arrays, else
// float), VEC (elements per vector load, or 1), PMODE and SR (how a 16-bit parameter is stored,
// see Param) and the algorithm's option flags. There are no floating-point literals in these
// sources: the per-call coefficients arrive as arguments of type M, constants are bit patterns,
// so a float kernel does float math only.
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

// -- storage formats ---------------------------------------------------------------------------
//
// bfloat16 and float16 values travel as their bit patterns and are converted in integer
// arithmetic, as kernels/formats.py does on the CPU, bit for bit: round to nearest even, NaN
// stays NaN (bfloat16: the quiet NaN 0x7fc0 with the sign; float16: the payload's top bits).
// get() widens a stored value to the math type, put() rounds a math value into storage.
struct bf16 {
    unsigned short bits;
};
struct f16 {
    unsigned short bits;
};

__device__ __forceinline__ float get(float x) { return x; }
__device__ __forceinline__ double get(double x) { return x; }
__device__ __forceinline__ void put(float& out, float x) { out = x; }
__device__ __forceinline__ void put(double& out, double x) { out = x; }

__device__ __forceinline__ float get(bf16 x) {
    return __uint_as_float(static_cast<unsigned>(x.bits) << 16);
}

__device__ __forceinline__ void put(bf16& out, float x) {
    const unsigned b = __float_as_uint(x);
    const unsigned top = b >> 16;
    const unsigned rounded = (b + 0x7FFFu + (top & 1u)) >> 16;
    const bool nan = (b & 0x7FFFFFFFu) > 0x7F800000u;
    out.bits = static_cast<unsigned short>(nan ? ((top & 0x8000u) | 0x7FC0u) : rounded);
}

__device__ __forceinline__ float get(f16 x) {
    const unsigned h = x.bits;
    const unsigned sign = (h & 0x8000u) << 16;
    const unsigned em = h & 0x7FFFu;
    const unsigned exp = em & 0x7C00u;
    const unsigned normal = (em << 13) + (112u << 23);          // rebias 15 -> 127
    const unsigned special = 0x7F800000u | ((em & 0x3FFu) << 13);  // inf, NaN with payload
    // Zero and subnormals: the mantissa times 2**-24 (0x33800000), exact in float.
    const unsigned tiny = __float_as_uint(static_cast<float>(em) * __uint_as_float(0x33800000u));
    const unsigned bits = exp == 0x7C00u ? special : (exp == 0u ? tiny : normal);
    return __uint_as_float(bits | sign);
}

__device__ __forceinline__ void put(f16& out, float x) {
    const unsigned b = __float_as_uint(x);
    const unsigned sign = (b >> 16) & 0x8000u;
    const unsigned a = b & 0x7FFFFFFFu;
    const unsigned payload = (a & 0x7FFFFFu) >> 13;
    const unsigned nan = 0x7C00u + payload + (payload == 0u ? 1u : 0u);
    const unsigned odd = (a >> 13) & 1u;
    const unsigned normal = (a - (112u << 23) + 0xFFFu + odd) >> 13;
    // Subnormal results (|x| < 2**-14): adding 0.5 (0x3F000000) aligns the kept bits at the
    // bottom of the float mantissa, and the float addition rounds them to nearest even.
    const unsigned tiny =
        __float_as_uint(__uint_as_float(a) + __uint_as_float(0x3F000000u)) - 0x3F000000u;
    const unsigned finite = a < 0x38800000u ? tiny : normal;
    const unsigned big = a > 0x7F800000u ? nan : 0x7C00u;  // 65520 and above round to inf
    out.bits = static_cast<unsigned short>(sign | (a >= 0x477FF000u ? big : finite));
}

// Stochastic rounding (kernels/formats.py random_bits, bf16_store_sr, f16_store_sr): 32
// random bits per element from a hash of the call's key and the element's index, then a
// rounding up with probability (dropped bits) / (their range). Unbiased; independent of the
// launch configuration.
__device__ __forceinline__ unsigned random_bits(unsigned key, long long index) {
    const unsigned long long u = static_cast<unsigned long long>(index);
    unsigned h = static_cast<unsigned>(u) * 0x9E3779B9u + key +
                 static_cast<unsigned>(u >> 32) * 0xC2B2AE35u;
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    return h ^ (h >> 16);
}

template <typename T, typename M>
__device__ __forceinline__ void put_sr(T& out, M x, unsigned) { put(out, x); }

__device__ __forceinline__ void put_sr(bf16& out, float x, unsigned r) {
    const unsigned b = __float_as_uint(x);
    const unsigned top = b >> 16;
    const unsigned up = (b + (r >> 16)) >> 16;
    const bool nan = (b & 0x7FFFFFFFu) > 0x7F800000u;
    out.bits = static_cast<unsigned short>(nan ? ((top & 0x8000u) | 0x7FC0u) : up);
}

__device__ __forceinline__ void put_sr(f16& out, float x, unsigned r) {
    const unsigned b = __float_as_uint(x);
    const unsigned sign = (b >> 16) & 0x8000u;
    const unsigned a = b & 0x7FFFFFFFu;
    const unsigned payload = (a & 0x7FFFFFu) >> 13;
    const unsigned nan = 0x7C00u + payload + (payload == 0u ? 1u : 0u);
    const unsigned normal = (a - (112u << 23) + (r >> 19)) >> 13;
    // Subnormal results: the 24-bit significand over 2**w, w = 126 - exponent (14..32), plus
    // as many random bits; magnitudes below 2**-33 become zero.
    const unsigned e = a >> 23;
    unsigned w = e <= 112u ? 126u - e : 14u;
    w = w <= 32u ? w : 32u;
    const unsigned long long man = (a & 0x7FFFFFu) | 0x800000u;
    const unsigned long long rand = static_cast<unsigned long long>(r) >> (32u - w);
    const unsigned tiny = e >= 94u ? static_cast<unsigned>((man + rand) >> w) : 0u;
    const unsigned finite = a < 0x38800000u ? tiny : normal;
    const unsigned big = a > 0x7F800000u ? nan : 0x7C00u;  // 65536 and above: inf
    out.bits = static_cast<unsigned short>(sign | (a >= 0x47800000u ? big : finite));
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

// The parameter of one pack, as the algorithms' kernels read and store it. PMODE says where its
// value lives: 0 in the parameter itself; 1 in a master copy (`master`, of type M), the
// parameter (16-bit) only written, rounded from it; 2 in the parameter plus `comp`, a
// compensation array of the parameter's type holding what the last rounding lost (Kahan).
// SR: a 16-bit parameter is stored with stochastic rounding, the random bits of element
// sr_offset + index under sr_key. (kernels/cpu/generic.py kernel_source does the same.)
template <int N, int PMODE, bool SR, typename TP, typename M>
struct Param {
    Pack<TP, N> v;     // the stored parameter
    Pack<M, N> full;   // PMODE 1 and 2: the full-precision value
    Pack<TP, N> comp;  // PMODE 2: the compensation
    unsigned key;
    long long index;

    __device__ __forceinline__ Param(const TP* param, const M* master, const TP* compensation,
                                     long long i, unsigned sr_key, long long sr_offset)
        : key(sr_key), index(sr_offset + i) {
        if (PMODE != 1) v = load<N>(param, i);  // with a master copy: written, never read
        if (PMODE == 1) full = load<N>(master, i);
        if (PMODE == 2) comp = load<N>(compensation, i);
    }

    // The value the rule starts from.
    __device__ __forceinline__ M value(int k) const {
        if (PMODE == 1) return full.v[k];
        if (PMODE == 2) return get(v.v[k]) + get(comp.v[k]);
        return get(v.v[k]);
    }

    // The rule's new value x of element k.
    __device__ __forceinline__ void set(int k, M x) {
        if (SR) {
            put_sr(v.v[k], x, random_bits(key, index + k));
        } else {
            put(v.v[k], x);
        }
        if (PMODE == 1) full.v[k] = x;
        if (PMODE == 2) {
            full.v[k] = x;
            put(comp.v[k], x - get(v.v[k]));
        }
    }

    // The parameter's new value as the weight EMA sees it: the full value where a master or
    // compensation array keeps it, else the value stored.
    __device__ __forceinline__ M stored(int k) const {
        return PMODE ? full.v[k] : get(v.v[k]);
    }

    __device__ __forceinline__ void store(TP* param, M* master, TP* compensation,
                                          long long i) const {
        ::store<N>(param, i, v);
        if (PMODE == 1) ::store<N>(master, i, full);
        if (PMODE == 2) ::store<N>(compensation, i, comp);
    }
};

// The weight EMA fused after an algorithm's update (kernels/rules.py `ema`): when EMA, each
// element of `ema` moves toward the parameter's new value (Param::stored) by torch.lerp with
// `weight` = 1 - decay and `rest` = 1 - weight; `first` nonzero copies it. Every algorithm's
// kernel takes (TE* ema, M ema_weight, M ema_rest, M ema_first) after its scalars and calls
// this right after storing the parameter.
template <bool EMA, int N, int PMODE, bool SR, typename TE, typename TP, typename M>
__device__ __forceinline__ void ema_update(TE* __restrict__ ema, long long i,
                                           const Param<N, PMODE, SR, TP, M>& P, M weight,
                                           M rest, M first) {
    if (EMA) {
        Pack<TE, N> E = load<N>(ema, i);
#pragma unroll
        for (int k = 0; k < N; ++k) {
            const M p = P.stored(k);
            put(E.v[k], first != M(0) ? p : lerp(get(E.v[k]), p, weight, rest));
        }
        store<N>(ema, i, E);
    }
}

// -- 8-bit blockwise states (kernels/q8.py; the numba-cuda kernels' _blockwise) ---------------
//
// A call with an 8-bit state instantiates its kernel with TS = q8. Each state pointer then
// points at a Q8State descriptor in device memory (written by the backend): its data (uint8
// codes, or the values of a state kept in float32 / bf16 / f16), its absmax (one float per
// block of Q8_BLOCK elements), the dynamic maps' tables, its format, and its slot among the
// call's 8-bit states. `each` runs such a kernel blockwise: one CUDA block of Q8_BLOCK threads
// per block of the states, a thread per element, grid-striding over the blocks. A thread's
// load() decodes its code with the block's old absmax; the rule runs on the fresh unquantized
// values; store() leaves the new value in shared memory; then, per 8-bit state, the block's new
// absmax is the maximum of the values' float32 bit patterns (magnitudes: exact, order-free, a
// NaN above everything) and each thread encodes its value. Bit for bit the CPU kernels' codes
// and absmax.

constexpr int Q8_BLOCK = 256;  // q8.BLOCK; the kernels are launched with this many threads
constexpr int Q8_SLOTS = 3;    // 8-bit states per call at most
constexpr unsigned Q8_KEY_LO = 0x3380u, Q8_KEY_HI = 0x3F80u;  // q8.KEY_LO, q8.KEY_HI
constexpr unsigned Q8_KEYS = Q8_KEY_HI - Q8_KEY_LO + 1u;      // q8._KEYS
constexpr unsigned Q8_MIDS = 129u;                            // q8._MIDS

// Q8State::format (fastopt/_cupy_backend.py Q8_FORMATS).
enum : int {
    Q8_FLOAT = 0, Q8_BF16 = 1, Q8_F16 = 2,  // a state kept as it is
    Q8_DYNAMIC_SIGNED = 3, Q8_DYNAMIC_UNSIGNED = 4, Q8_FP8_SIGNED = 5, Q8_FP8_UNSIGNED = 6
};

struct Q8State {
    void* data;           // codes (uint8), or the values of a state kept as it is
    float* absmax;        // one per block of Q8_BLOCK elements
    const float* decode;  // dynamic maps: the value of each code
    const int* lut;       // dynamic maps: the quantizer's table (signed: both sides)
    const float* mid;     // dynamic maps: the midpoints (signed: both sides)
    int format;
    int slot;
};

// A value of a state in a q8 kernel: the float the rule sees (get/put as for the other types).
struct q8 {
    float x;
};
__device__ __forceinline__ float get(q8 v) { return v.x; }
__device__ __forceinline__ void put(q8& out, float x) { out.x = x; }

__device__ __forceinline__ float f32(unsigned bits) { return __uint_as_float(bits); }

// The largest table value of a format: a block's absmax maps to it (q8.K_DYNAMIC, K_FP8).
__device__ __forceinline__ float q8_k(int format) {
    return f32(format <= Q8_DYNAMIC_UNSIGNED ? 0x3F800000u : 0x3FF00000u);  // 1.0, 1.875
}

__device__ __forceinline__ float q8_decode(const Q8State& d, unsigned c) {
    if (d.format <= Q8_DYNAMIC_UNSIGNED) return d.decode[c];
    const bool sign = d.format == Q8_FP8_SIGNED;
    const unsigned mag = sign ? (c & 0x7Fu) : c;
    // E4M3 (bias 15) or UE5M3 (bias 31); subnormals mag * 2**-17 or mag * 2**-33.
    const float normal = f32((mag << 20) + ((sign ? 112u : 96u) << 23));
    const float tiny = static_cast<float>(mag) * f32(sign ? 0x37000000u : 0x2F000000u);
    const float v = mag < 8u ? tiny : normal;
    return sign && (c & 0x80u) ? -v : v;
}

// The code of the scaled value x; v is the state's unscaled new value (a positive value of a
// non-negative state never becomes code 0). q8.py's *_store, line for line.
__device__ __forceinline__ unsigned char q8_encode(const Q8State& d, float x, float v) {
    const unsigned b = __float_as_uint(x);
    const unsigned a = b & 0x7FFFFFFFu;
    if (d.format == Q8_DYNAMIC_SIGNED) {
        unsigned k = a >> 16;
        k = k >= Q8_KEY_LO ? k : Q8_KEY_LO;
        k = (k <= Q8_KEY_HI ? k : Q8_KEY_HI) - Q8_KEY_LO;
        const unsigned neg = b >> 31;
        unsigned j = static_cast<unsigned>(d.lut[k + neg * Q8_KEYS]);
        j += f32(a) > d.mid[j + neg * Q8_MIDS] ? 1u : 0u;
        return static_cast<unsigned char>(127u + j - 2u * j * neg);
    }
    if (d.format == Q8_DYNAMIC_UNSIGNED) {
        unsigned k = b >> 16;
        k = k >= Q8_KEY_LO ? k : Q8_KEY_LO;
        k = (k <= Q8_KEY_HI ? k : Q8_KEY_HI) - Q8_KEY_LO;
        unsigned j = static_cast<unsigned>(d.lut[k]);
        j += x > d.mid[j] ? 1u : 0u;
        j = b < 0x80000000u || x != x ? j : 0u;
        return static_cast<unsigned char>(j || !(v > f32(0u)) ? j : 1u);
    }
    if (d.format == Q8_FP8_SIGNED) {
        const unsigned normal = (a - (112u << 23) + 0x7FFFFu + ((a >> 20) & 1u)) >> 20;
        // Below 2**-14: adding 64 (ulp 2**-17) rounds the magnitude to the subnormal grid.
        const unsigned tiny = __float_as_uint(f32(a) + f32(0x42800000u)) - 0x42800000u;
        unsigned mag = a < (113u << 23) ? tiny : normal;
        mag = mag < 0x7Fu ? mag : 0x7Fu;
        return static_cast<unsigned char>((b >> 31) && mag ? (mag | 0x80u) : mag);
    }
    const unsigned normal = (a - (96u << 23) + 0x7FFFFu + ((a >> 20) & 1u)) >> 20;
    // Below 2**-30: adding 2**-10 (ulp 2**-33) rounds to the subnormal grid.
    const unsigned tiny = __float_as_uint(f32(a) + f32(0x3A800000u)) - 0x3A800000u;
    unsigned mag = a < (97u << 23) ? tiny : normal;
    mag = mag < 0xFFu ? mag : 0xFFu;
    mag = (b >> 31) && a <= 0x7F800000u ? 0u : mag;
    return static_cast<unsigned char>(mag || !(v > f32(0u)) ? mag : 1u);
}

// What the threads of a block share: each 8-bit state's new values, the reduction, the
// descriptors of the states stored (null: that slot is unused).
struct Q8Shared {
    float value[Q8_SLOTS][Q8_BLOCK];
    unsigned bits[Q8_BLOCK];
    const Q8State* state[Q8_SLOTS];
};

__device__ __forceinline__ Q8Shared& q8_shared() {
    __shared__ Q8Shared shared;
    return shared;
}

template <int N>
__device__ __forceinline__ Pack<q8, N> load(const q8* s, long long i) {
    static_assert(N == 1, "a q8 kernel reads one element per thread");
    const Q8State& d = *reinterpret_cast<const Q8State*>(s);
    Pack<q8, N> out;
    if (d.format == Q8_FLOAT) {
        out.v[0].x = static_cast<const float*>(d.data)[i];
    } else if (d.format == Q8_BF16) {
        out.v[0].x = get(static_cast<const bf16*>(d.data)[i]);
    } else if (d.format == Q8_F16) {
        out.v[0].x = get(static_cast<const f16*>(d.data)[i]);
    } else {
        const float scale = d.absmax[i / Q8_BLOCK] / q8_k(d.format);
        out.v[0].x = q8_decode(d, static_cast<const unsigned char*>(d.data)[i]) * scale;
    }
    return out;
}

template <int N>
__device__ __forceinline__ void store(q8* s, long long i, const Pack<q8, N>& x) {
    static_assert(N == 1, "a q8 kernel writes one element per thread");
    const Q8State& d = *reinterpret_cast<const Q8State*>(s);
    if (d.format == Q8_FLOAT) {
        static_cast<float*>(d.data)[i] = x.v[0].x;
    } else if (d.format == Q8_BF16) {
        put(static_cast<bf16*>(d.data)[i], x.v[0].x);
    } else if (d.format == Q8_F16) {
        put(static_cast<f16*>(d.data)[i], x.v[0].x);
    } else {  // encoded by `blockwise` once the block's absmax is known
        Q8Shared& sh = q8_shared();
        sh.value[d.slot][threadIdx.x] = x.v[0].x;
        sh.state[d.slot] = &d;
    }
}

// The blockwise loop of a q8 kernel (see above): body(i, Width<1>()) for each element, then
// the 8-bit states' absmax and codes. Every thread of the block reaches every barrier.
template <typename Body>
__device__ __forceinline__ void blockwise(long long n, Body body) {
    Q8Shared& sh = q8_shared();
    const unsigned t = threadIdx.x;
    const long long blocks = (n + Q8_BLOCK - 1) / Q8_BLOCK;
    for (long long b = blockIdx.x; b < blocks; b += gridDim.x) {
        const long long i = b * Q8_BLOCK + t;
        if (t < Q8_SLOTS) sh.state[t] = nullptr;
#pragma unroll
        for (int s = 0; s < Q8_SLOTS; ++s) sh.value[s][t] = f32(0u);
        __syncthreads();
        if (i < n) body(i, Width<1>());
        __syncthreads();
        for (int s = 0; s < Q8_SLOTS; ++s) {
            const Q8State* d = sh.state[s];  // the same for every thread
            if (d == nullptr) continue;
            const float v = sh.value[s][t];
            sh.bits[t] = __float_as_uint(v) & 0x7FFFFFFFu;
            __syncthreads();
            for (unsigned h = Q8_BLOCK / 2; h > 0u; h /= 2u) {
                if (t < h && sh.bits[t + h] > sh.bits[t]) sh.bits[t] = sh.bits[t + h];
                __syncthreads();
            }
            const float absmax = f32(sh.bits[0]);
            const float k = absmax > f32(0u) ? q8_k(d->format) / absmax : f32(0u);
            if (i < n) static_cast<unsigned char*>(d->data)[i] = q8_encode(*d, v * k, v);
            if (t == 0) d->absmax[b] = absmax;
            __syncthreads();  // bits[0] read by all before the next state's reduction
        }
    }
}

template <typename A, typename B>
struct same_type {
    static constexpr bool value = false;
};
template <typename A>
struct same_type<A, A> {
    static constexpr bool value = true;
};

// The loop of an algorithm's kernel: blockwise when its states are q8, else grid_stride.
template <int VEC, typename TS, typename Body>
__device__ __forceinline__ void each(long long n, Body body) {
    if constexpr (same_type<TS, q8>::value) {
        blockwise(n, body);
    } else {
        grid_stride<VEC>(n, body);
    }
}
