/* domas.checksum._checksum: SIMD adler32, adler32_combine, xxh3_64 and the fused chunk_sums.
 *
 * Invariants:
 *  - Every code path returns exactly what zlib.adler32 / xxhash.xxh3_64_intdigest return for the
 *    same bytes; a path only changes the speed. The fastest path the CPU supports is chosen once
 *    at import; `_set_impl` may switch to another supported path (tests, DOMAS_CHECKSUM_IMPL).
 *  - Between blocks the adler32 sums (a, b) are reduced modulo 65521; a block never holds more
 *    than NMAX bytes, so no 32-bit lane can overflow inside it.
 *  - The GIL is released only while the Py_buffer is held, and only for inputs >= 2 KiB.
 *
 * adler32 (RFC 1950): a = 1 + sum(d_i), b = sum of the successive a values, both mod 65521.
 * For a block of vectors V_0..V_{k-1} of W bytes starting from (a, b):
 *   a' = a + sum_j S(V_j)
 *   b' = b + W*k*a + W * sum_j (k-1-j) * S(V_j) + sum_j sum_t (W - t) * V_j[t]
 * S(V) comes from psadbw against zero; the weighted sum from pmaddubsw with weights W..1
 * followed by pmaddwd with ones (or one vpdpbusd with VNNI); sum_j (k-1-j) S(V_j) is accumulated
 * by adding the running byte sum into a third register before each vector. This is the widely
 * used SIMD adler32 scheme (zlib-ng, Chromium's zlib), written here from the formula above.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DOMAS_X86 1
#include <immintrin.h>
#endif

/* xxHash is used header-only (libxxhash-dev); its long-input kernel is instantiated per ISA.
 * The AVX-512 paths keep xxHash's AVX2 kernel: on AMD Zen 4 (512-bit ops split in two) it was
 * measured faster on 256 MiB (25 vs 19.5 GB/s) and as fast in cache. */
#define XXH_INLINE_ALL
#define XXH_STATIC_LINKING_ONLY
#if defined(DOMAS_X86)
#define XXH_ACC_ALIGN 64
#define XXH_DISPATCH_AVX2 1
#define XXH_TARGET_AVX2 __attribute__((target("avx2")))
#endif
#include <xxhash.h>

#if defined(DOMAS_X86) && XXH_VERSION_NUMBER >= 801
#define DOMAS_XXH_DISPATCH 1
#if XXH_VERSION_NUMBER >= 802
#define DOMAS_XXH_ACC(isa) XXH3_accumulate_##isa
#else
#define DOMAS_XXH_ACC(isa) XXH3_accumulate_512_##isa
#endif
#endif

#define ADLER_BASE 65521u
#define ADLER_NMAX 5552
#define GIL_RELEASE_MIN 2048
/* L2-sized: on 256 MiB inputs 64 KiB..512 KiB measured alike, 8..32 KiB slower */
#define FUSED_BLOCK (128 * 1024)

typedef uint32_t (*adler_fn)(uint32_t adler, const uint8_t *p, size_t n);
typedef XXH_errorcode (*xxh_update_fn)(XXH3_state_t *state, const uint8_t *p, size_t n);
typedef XXH64_hash_t (*xxh_oneshot_fn)(const uint8_t *p, size_t n);

typedef struct {
    const char *name;
    int (*supported)(void); /* does this CPU (and OS) run the path? */
    adler_fn adler;
    xxh_update_fn xxh_update;
    xxh_oneshot_fn xxh_oneshot;
} impl_t;

/* ---- adler32: scalar ------------------------------------------------------------------- */

/* `adler` must hold reduced sums (both halves < 65521); the result is reduced too. */
static uint32_t
adler_scalar(uint32_t adler, const uint8_t *p, size_t n)
{
    uint32_t a = adler & 0xffff, b = adler >> 16;
    while (n) {
        size_t k = n < ADLER_NMAX ? n : ADLER_NMAX;
        n -= k;
        for (; k >= 8; k -= 8, p += 8) {
            a += p[0]; b += a; a += p[1]; b += a;
            a += p[2]; b += a; a += p[3]; b += a;
            a += p[4]; b += a; a += p[5]; b += a;
            a += p[6]; b += a; a += p[7]; b += a;
        }
        for (; k; k--) {
            a += *p++;
            b += a;
        }
        a %= ADLER_BASE;
        b %= ADLER_BASE;
    }
    return a | (b << 16);
}

/* Fold one SIMD block into (a, b): `bytes` = block length, s1 = byte sum, s3 = running-sum
 * accumulator (scaled by `width`), s2 = in-vector weighted sum. */
static inline uint32_t
adler_fold(uint32_t adler, size_t bytes, uint64_t width, uint64_t s1, uint64_t s2, uint64_t s3)
{
    uint64_t a = adler & 0xffff, b = adler >> 16;
    b = (b + a * bytes + width * s3 + s2) % ADLER_BASE;
    a = (a + s1) % ADLER_BASE;
    return (uint32_t)(a | (b << 16));
}

#if defined(DOMAS_X86)

/* ---- adler32: SSSE3 (16 bytes per vector) ---------------------------------------------- */

__attribute__((target("ssse3"))) static uint64_t
hsum_epi32_128(__m128i v)
{
    uint32_t lane[4];
    _mm_storeu_si128((__m128i *)lane, v);
    return (uint64_t)lane[0] + lane[1] + lane[2] + lane[3];
}

__attribute__((target("ssse3"))) static uint32_t
adler_ssse3(uint32_t adler, const uint8_t *p, size_t n)
{
    const __m128i weights = _mm_setr_epi8(16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1);
    const __m128i ones = _mm_set1_epi16(1);
    const __m128i zero = _mm_setzero_si128();
    while (n >= 16) {
        size_t bytes = n < ADLER_NMAX ? n : ADLER_NMAX;
        bytes &= ~(size_t)15;
        const uint8_t *end = p + bytes;
        __m128i vs1 = zero, vs2 = zero, vs3 = zero;
        for (; p < end; p += 16) {
            __m128i d = _mm_loadu_si128((const __m128i *)p);
            vs3 = _mm_add_epi32(vs3, vs1);
            vs1 = _mm_add_epi32(vs1, _mm_sad_epu8(d, zero));
            vs2 = _mm_add_epi32(vs2, _mm_madd_epi16(_mm_maddubs_epi16(d, weights), ones));
        }
        adler = adler_fold(adler, bytes, 16, hsum_epi32_128(vs1), hsum_epi32_128(vs2),
                           hsum_epi32_128(vs3));
        n -= bytes;
    }
    return adler_scalar(adler, p, n);
}

/* ---- adler32: AVX2 (two 32-byte vectors per step, weights 64..1) ----------------------- */

__attribute__((target("avx2"))) static uint64_t
hsum_epi32_256(__m256i v)
{
    uint32_t lane[8];
    uint64_t s = 0;
    _mm256_storeu_si256((__m256i *)lane, v);
    for (int i = 0; i < 8; i++)
        s += lane[i];
    return s;
}

__attribute__((target("avx2"))) static uint32_t
adler_avx2(uint32_t adler, const uint8_t *p, size_t n)
{
    const __m256i w_hi = _mm256_setr_epi8(64, 63, 62, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51,
                                          50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39, 38, 37,
                                          36, 35, 34, 33);
    const __m256i w_lo = _mm256_setr_epi8(32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19,
                                          18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3,
                                          2, 1);
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i zero = _mm256_setzero_si256();
    while (n >= 64) {
        size_t bytes = n < ADLER_NMAX ? n : ADLER_NMAX;
        bytes &= ~(size_t)63;
        const uint8_t *end = p + bytes;
        __m256i vs1 = zero, vs2 = zero, vs3 = zero;
        for (; p < end; p += 64) {
            __m256i d0 = _mm256_loadu_si256((const __m256i *)p);
            __m256i d1 = _mm256_loadu_si256((const __m256i *)(p + 32));
            vs3 = _mm256_add_epi32(vs3, vs1);
            __m256i s = _mm256_add_epi32(_mm256_sad_epu8(d0, zero), _mm256_sad_epu8(d1, zero));
            vs1 = _mm256_add_epi32(vs1, s);
            __m256i m0 = _mm256_madd_epi16(_mm256_maddubs_epi16(d0, w_hi), ones);
            __m256i m1 = _mm256_madd_epi16(_mm256_maddubs_epi16(d1, w_lo), ones);
            vs2 = _mm256_add_epi32(vs2, _mm256_add_epi32(m0, m1));
        }
        adler = adler_fold(adler, bytes, 64, hsum_epi32_256(vs1), hsum_epi32_256(vs2),
                           hsum_epi32_256(vs3));
        n -= bytes;
    }
    _mm256_zeroupper(); /* GCC omits it before the tail call */
    return adler_scalar(adler, p, n);
}

/* ---- adler32: AVX-512BW (64-byte vectors, weights 64..1) ------------------------------- */

__attribute__((target("avx512f,avx512bw"))) static uint32_t
adler_avx512(uint32_t adler, const uint8_t *p, size_t n)
{
    const __m512i weights = _mm512_set_epi8(
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
        26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48,
        49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64);
    const __m512i ones = _mm512_set1_epi16(1);
    const __m512i zero = _mm512_setzero_si512();
    while (n >= 64) {
        size_t bytes = n < ADLER_NMAX ? n : ADLER_NMAX;
        bytes &= ~(size_t)63;
        const uint8_t *end = p + bytes;
        __m512i vs1 = zero, vs2 = zero, vs3 = zero;
        for (; p < end; p += 64) {
            __m512i d = _mm512_loadu_si512((const void *)p);
            vs3 = _mm512_add_epi32(vs3, vs1);
            vs1 = _mm512_add_epi32(vs1, _mm512_sad_epu8(d, zero));
            vs2 = _mm512_add_epi32(vs2, _mm512_madd_epi16(_mm512_maddubs_epi16(d, weights), ones));
        }
        adler = adler_fold(adler, bytes, 64, (uint64_t)(uint32_t)_mm512_reduce_add_epi32(vs1),
                           (uint64_t)(uint32_t)_mm512_reduce_add_epi32(vs2),
                           (uint64_t)(uint32_t)_mm512_reduce_add_epi32(vs3));
        n -= bytes;
    }
    _mm256_zeroupper(); /* GCC omits it before the tail call */
    return adler_scalar(adler, p, n);
}

/* ---- adler32: AVX-512 VNNI (vpdpbusd does the weighted byte sum in one step) ----------- */

__attribute__((target("avx512f,avx512bw,avx512vnni"))) static uint32_t
adler_avx512vnni(uint32_t adler, const uint8_t *p, size_t n)
{
    const __m512i weights = _mm512_set_epi8(
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
        26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48,
        49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64);
    const __m512i zero = _mm512_setzero_si512();
    while (n >= 64) {
        size_t bytes = n < ADLER_NMAX ? n : ADLER_NMAX;
        bytes &= ~(size_t)63;
        const uint8_t *end = p + bytes;
        /* two weighted-sum accumulators hide the latency of vpdpbusd */
        __m512i vs1 = zero, vs2a = zero, vs2b = zero, vs3 = zero;
        for (; p + 128 <= end; p += 128) {
            __m512i d0 = _mm512_loadu_si512((const void *)p);
            __m512i d1 = _mm512_loadu_si512((const void *)(p + 64));
            vs3 = _mm512_add_epi32(vs3, vs1);
            vs1 = _mm512_add_epi32(vs1, _mm512_sad_epu8(d0, zero));
            vs2a = _mm512_dpbusd_epi32(vs2a, d0, weights);
            vs3 = _mm512_add_epi32(vs3, vs1);
            vs1 = _mm512_add_epi32(vs1, _mm512_sad_epu8(d1, zero));
            vs2b = _mm512_dpbusd_epi32(vs2b, d1, weights);
        }
        if (p < end) {
            __m512i d = _mm512_loadu_si512((const void *)p);
            vs3 = _mm512_add_epi32(vs3, vs1);
            vs1 = _mm512_add_epi32(vs1, _mm512_sad_epu8(d, zero));
            vs2a = _mm512_dpbusd_epi32(vs2a, d, weights);
            p += 64;
        }
        adler = adler_fold(adler, bytes, 64, (uint64_t)(uint32_t)_mm512_reduce_add_epi32(vs1),
                           (uint64_t)(uint32_t)_mm512_reduce_add_epi32(_mm512_add_epi32(vs2a, vs2b)),
                           (uint64_t)(uint32_t)_mm512_reduce_add_epi32(vs3));
        n -= bytes;
    }
    _mm256_zeroupper(); /* GCC omits it before the tail call */
    return adler_scalar(adler, p, n);
}

#endif /* DOMAS_X86 */

/* ---- xxh3 per-ISA instantiations ------------------------------------------------------- */

#if defined(DOMAS_XXH_DISPATCH)
#define DOMAS_XXH_VARIANT(isa, attr)                                                           \
    static attr XXH_errorcode xxh_update_##isa(XXH3_state_t *state, const uint8_t *p, size_t n) \
    {                                                                                          \
        return XXH3_update(state, p, n, DOMAS_XXH_ACC(isa), XXH3_scrambleAcc_##isa);           \
    }                                                                                          \
    static attr XXH64_hash_t xxh_oneshot_##isa(const uint8_t *p, size_t n)                     \
    {                                                                                          \
        if (n <= XXH3_MIDSIZE_MAX)                                                             \
            return XXH3_64bits(p, n);                                                          \
        return XXH3_hashLong_64b_internal(p, n, XXH3_kSecret, sizeof(XXH3_kSecret),            \
                                          DOMAS_XXH_ACC(isa), XXH3_scrambleAcc_##isa);         \
    }

DOMAS_XXH_VARIANT(scalar, )
DOMAS_XXH_VARIANT(sse2, )
DOMAS_XXH_VARIANT(avx2, __attribute__((target("avx2"))))
#else
static XXH_errorcode
xxh_update_default(XXH3_state_t *state, const uint8_t *p, size_t n)
{
    return XXH3_64bits_update(state, p, n);
}

static XXH64_hash_t
xxh_oneshot_default(const uint8_t *p, size_t n)
{
    return XXH3_64bits(p, n);
}
#define xxh_update_scalar xxh_update_default
#define xxh_oneshot_scalar xxh_oneshot_default
#endif

/* ---- the paths, slowest first ---------------------------------------------------------- */

static int
cpu_any(void)
{
    return 1;
}

#if defined(DOMAS_X86)
/* __builtin_cpu_supports also checks that the OS saves the AVX/AVX-512 register state. */
static int
cpu_ssse3(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("ssse3");
}

static int
cpu_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}

static int
cpu_avx512(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}

static int
cpu_avx512vnni(void)
{
    return cpu_avx512() && __builtin_cpu_supports("avx512vnni");
}
#endif

#if !defined(DOMAS_XXH_DISPATCH)
#define xxh_update_sse2 xxh_update_default
#define xxh_oneshot_sse2 xxh_oneshot_default
#define xxh_update_avx2 xxh_update_default
#define xxh_oneshot_avx2 xxh_oneshot_default
#endif

static const impl_t IMPLS[] = {
    {"scalar", cpu_any, adler_scalar, xxh_update_scalar, xxh_oneshot_scalar},
#if defined(DOMAS_X86)
    {"ssse3", cpu_ssse3, adler_ssse3, xxh_update_sse2, xxh_oneshot_sse2},
    {"avx2", cpu_avx2, adler_avx2, xxh_update_avx2, xxh_oneshot_avx2},
    {"avx512", cpu_avx512, adler_avx512, xxh_update_avx2, xxh_oneshot_avx2},
    {"avx512vnni", cpu_avx512vnni, adler_avx512vnni, xxh_update_avx2, xxh_oneshot_avx2},
#endif
};
#define N_IMPLS (sizeof(IMPLS) / sizeof(IMPLS[0]))

static const impl_t *active = &IMPLS[0];

/* ---- hashing cores on raw memory (no Python objects: callable without the GIL) --------- */

static uint32_t
reduce_adler(uint32_t value)
{
    return ((value & 0xffff) % ADLER_BASE) | (((value >> 16) % ADLER_BASE) << 16);
}

static void
fused_sums(const impl_t *impl, const uint8_t *p, size_t n, uint32_t *adler, XXH64_hash_t *xxh)
{
    XXH3_state_t state;
    uint32_t a = 1;
    XXH3_INITSTATE(&state);
    XXH3_64bits_reset(&state);
    while (n) {
        size_t k = n < FUSED_BLOCK ? n : FUSED_BLOCK;
        impl->xxh_update(&state, p, k);
        a = impl->adler(a, p, k);
        p += k;
        n -= k;
    }
    *adler = a;
    *xxh = XXH3_64bits_digest(&state);
}

/* ---- Python glue ----------------------------------------------------------------------- */

static int
take_buffer(PyObject *obj, Py_buffer *view)
{
    return PyObject_GetBuffer(obj, view, PyBUF_SIMPLE);
}

static PyObject *
py_adler32(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"", "value", NULL};
    PyObject *data, *value_obj = NULL;
    Py_buffer view;
    uint32_t value = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:adler32", kwlist, &data, &value_obj))
        return NULL;
    if (value_obj != NULL) {
        if (!PyLong_Check(value_obj)) {
            PyErr_Format(PyExc_TypeError, "adler32 value must be an int, not %.100s",
                         Py_TYPE(value_obj)->tp_name);
            return NULL;
        }
        value = (uint32_t)PyLong_AsUnsignedLongMask(value_obj);
        if (PyErr_Occurred())
            return NULL;
    }
    if (take_buffer(data, &view) < 0)
        return NULL;
    const impl_t *impl = active;
    const uint8_t *p = view.buf;
    size_t n = (size_t)view.len;
    value = reduce_adler(value);
    if (n >= GIL_RELEASE_MIN) {
        Py_BEGIN_ALLOW_THREADS
        value = impl->adler(value, p, n);
        Py_END_ALLOW_THREADS
    } else {
        value = impl->adler(value, p, n);
    }
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(value);
}

/* len2 % 65521 for any non-negative int, -1 with an exception set otherwise. */
static long
length_mod_base(PyObject *len2)
{
    int overflow = 0;
    long long n;
    if (!PyLong_Check(len2)) {
        PyErr_Format(PyExc_TypeError, "len2 must be an int, not %.100s", Py_TYPE(len2)->tp_name);
        return -1;
    }
    n = PyLong_AsLongLongAndOverflow(len2, &overflow);
    if (n == -1 && PyErr_Occurred())
        return -1;
    if (overflow < 0 || (overflow == 0 && n < 0)) {
        PyErr_SetString(PyExc_ValueError, "len2 must not be negative");
        return -1;
    }
    if (overflow == 0)
        return (long)(n % ADLER_BASE);
    PyObject *base = PyLong_FromUnsignedLong(ADLER_BASE);
    PyObject *rem = base ? PyNumber_Remainder(len2, base) : NULL;
    Py_XDECREF(base);
    if (rem == NULL)
        return -1;
    long r = PyLong_AsLong(rem);
    Py_DECREF(rem);
    return r;
}

static int
adler_arg(PyObject *obj, const char *what, uint64_t *out)
{
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", what, Py_TYPE(obj)->tp_name);
        return -1;
    }
    *out = PyLong_AsUnsignedLongLongMask(obj) & 0xffffffffu;
    return PyErr_Occurred() ? -1 : 0;
}

static PyObject *
py_adler32_combine(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t adler1, adler2;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "adler32_combine expects 3 arguments (adler1, adler2, len2), got %zd",
                     nargs);
        return NULL;
    }
    if (adler_arg(args[0], "adler1", &adler1) < 0 || adler_arg(args[1], "adler2", &adler2) < 0)
        return NULL;
    long rem = length_mod_base(args[2]);
    if (rem < 0)
        return NULL;
    uint64_t a1 = adler1 & 0xffff, b1 = adler1 >> 16;
    uint64_t a2 = adler2 & 0xffff, b2 = adler2 >> 16;
    uint64_t a = (a1 + a2 + ADLER_BASE - 1) % ADLER_BASE;
    uint64_t b = (b1 + b2 + (uint64_t)rem * a1 + ADLER_BASE - (uint64_t)rem) % ADLER_BASE;
    return PyLong_FromUnsignedLong((unsigned long)(a | (b << 16)));
}

static PyObject *
py_chunk_sums(PyObject *module, PyObject *data)
{
    Py_buffer view;
    uint32_t adler;
    XXH64_hash_t xxh;
    if (take_buffer(data, &view) < 0)
        return NULL;
    const impl_t *impl = active;
    if (view.len >= GIL_RELEASE_MIN) {
        Py_BEGIN_ALLOW_THREADS
        fused_sums(impl, view.buf, (size_t)view.len, &adler, &xxh);
        Py_END_ALLOW_THREADS
    } else {
        fused_sums(impl, view.buf, (size_t)view.len, &adler, &xxh);
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(kK)", (unsigned long)adler, (unsigned long long)xxh);
}

static PyObject *
py_xxh3_64(PyObject *module, PyObject *data)
{
    Py_buffer view;
    XXH64_hash_t xxh;
    if (take_buffer(data, &view) < 0)
        return NULL;
    const impl_t *impl = active;
    if (view.len >= GIL_RELEASE_MIN) {
        Py_BEGIN_ALLOW_THREADS
        xxh = impl->xxh_oneshot(view.buf, (size_t)view.len);
        Py_END_ALLOW_THREADS
    } else {
        xxh = impl->xxh_oneshot(view.buf, (size_t)view.len);
    }
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong(xxh);
}

static PyObject *
py_implementation(PyObject *module, PyObject *unused)
{
    return PyUnicode_FromString(active->name);
}

static PyObject *
py_available(PyObject *module, PyObject *unused)
{
    PyObject *names = PyList_New(0);
    if (names == NULL)
        return NULL;
    for (size_t i = 0; i < N_IMPLS; i++) {
        if (!IMPLS[i].supported())
            continue;
        PyObject *name = PyUnicode_FromString(IMPLS[i].name);
        if (name == NULL || PyList_Append(names, name) < 0) {
            Py_XDECREF(name);
            Py_DECREF(names);
            return NULL;
        }
        Py_DECREF(name);
    }
    PyObject *result = PyList_AsTuple(names);
    Py_DECREF(names);
    return result;
}

static PyObject *
py_set_impl(PyObject *module, PyObject *arg)
{
    const char *name = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
    if (name == NULL) {
        PyErr_Clear();
        PyErr_SetString(PyExc_TypeError, "the checksum path must be given as a string");
        return NULL;
    }
    for (size_t i = 0; i < N_IMPLS; i++) {
        if (strcmp(IMPLS[i].name, name) == 0 && IMPLS[i].supported()) {
            active = &IMPLS[i];
            Py_RETURN_NONE;
        }
    }
    PyObject *avail = py_available(module, NULL);
    if (avail != NULL) {
        PyErr_Format(PyExc_ValueError, "checksum path %R is not available on this CPU; choose one of %R",
                     arg, avail);
        Py_DECREF(avail);
    }
    return NULL;
}

static PyMethodDef methods[] = {
    {"adler32", (PyCFunction)(void (*)(void))py_adler32, METH_VARARGS | METH_KEYWORDS,
     "adler32($module, data, /, value=1)\n--\n\nAdler-32 of a bytes-like object, equal to zlib.adler32."},
    {"adler32_combine", (PyCFunction)(void (*)(void))py_adler32_combine, METH_FASTCALL,
     "adler32_combine($module, adler1, adler2, len2, /)\n--\n\n"
     "Adler-32 of A+B from adler32(A), adler32(B) and len(B) >= 0 (zlib's adler32_combine)."},
    {"chunk_sums", py_chunk_sums, METH_O,
     "chunk_sums($module, data, /)\n--\n\n(adler32, xxh3_64) of data, both checksums in one pass over cache-sized blocks."},
    {"xxh3_64", py_xxh3_64, METH_O,
     "xxh3_64($module, data, /)\n--\n\nXXH3 64-bit hash (seed 0), equal to xxhash.xxh3_64_intdigest."},
    {"implementation", py_implementation, METH_NOARGS,
     "implementation($module, /)\n--\n\nName of the active code path (scalar, ssse3, avx2, avx512, avx512vnni)."},
    {"_available", py_available, METH_NOARGS,
     "_available($module, /)\n--\n\nThe code paths this CPU supports, slowest first."},
    {"_set_impl", py_set_impl, METH_O,
     "_set_impl($module, name, /)\n--\n\nSwitch to another supported code path (tests, DOMAS_CHECKSUM_IMPL)."},
    {NULL, NULL, 0, NULL},
};

static int
checksum_exec(PyObject *module)
{
    /* the xxhash.h version this module was built with, e.g. 801 for 0.8.1 */
    if (PyModule_AddIntConstant(module, "XXH_VERSION", XXH_VERSION_NUMBER) < 0)
        return -1;
    for (size_t i = 0; i < N_IMPLS; i++) {
        if (IMPLS[i].supported())
            active = &IMPLS[i];
    }
    return 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, checksum_exec},
    {0, NULL},
};

static struct PyModuleDef checksum_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "domas.checksum._checksum",
    .m_doc = "SIMD adler32, adler32_combine, xxh3_64 and the fused chunk_sums (see domas.checksum).",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit__checksum(void)
{
    return PyModuleDef_Init(&checksum_module);
}
