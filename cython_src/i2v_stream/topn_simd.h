/* Integer dot products of the reader's int8 first pass (_topn.pyx).
 *
 * Each row's codes (uint8, stored +128) are multiplied with the query's codes
 * (int8) and summed in int32: the unsigned x signed byte multiply-add that
 * CPUs with VNNI do 32 or 64 bytes at a time, and that compilers emit for
 * this loop when they may use it.
 *
 * A native build (I2V_NATIVE=1) compiles the loop for the build machine. A
 * portable build (x86-64 with GCC or clang) compiles it twice, for AVX-512
 * with VNNI and for baseline x86-64, and the first call picks the one the CPU
 * runs, so a portable wheel or image still gets the fast pass.
 *
 * Without VNNI the pass is not worth it: an AVX2 build of this loop measured
 * 650 first passes/s over 100,000 x 128 codes, where one float32
 * matrix-vector product over the same rows ran 1,300/s.
 */
#ifndef I2V_TOPN_SIMD_H
#define I2V_TOPN_SIMD_H

#include <stdint.h>

#ifndef I2V_NATIVE
#define I2V_NATIVE 0
#endif

#if !I2V_NATIVE && defined(__x86_64__) && defined(__GNUC__)
#define I2V_DISPATCH 1
#endif

typedef void (*i2v_code_dots_fn)(const uint8_t *, int64_t, int, const int8_t *, int32_t *);

/* The loop itself; inlined into each instruction-set variant below. */
static inline __attribute__((always_inline)) void
i2v_code_dots_body(const uint8_t *codes, int64_t n_rows, int width, const int8_t *query,
                   int32_t *out)
{
    /* Four rows at a time: four independent chains of multiply-adds, where
     * one row alone would wait on its single accumulator. */
    int64_t row = 0;
    int d;
    for (; row + 4 <= n_rows; row += 4) {
        const uint8_t *c0 = codes + row * width, *c1 = c0 + width;
        const uint8_t *c2 = c1 + width, *c3 = c2 + width;
        int32_t t0 = 0, t1 = 0, t2 = 0, t3 = 0;
        for (d = 0; d < width; d++) {
            int32_t q = query[d];
            t0 += (int32_t)c0[d] * q;
            t1 += (int32_t)c1[d] * q;
            t2 += (int32_t)c2[d] * q;
            t3 += (int32_t)c3[d] * q;
        }
        out[row] = t0;
        out[row + 1] = t1;
        out[row + 2] = t2;
        out[row + 3] = t3;
    }
    for (; row < n_rows; row++) {
        const uint8_t *code = codes + row * width;
        int32_t total = 0;
        for (d = 0; d < width; d++)
            total += (int32_t)code[d] * (int32_t)query[d];
        out[row] = total;
    }
}

#ifdef I2V_DISPATCH
__attribute__((target("avx512vnni,avx512vl,avx512bw,avx512f,avx2,fma")))
static void i2v_code_dots_vnni(const uint8_t *codes, int64_t n_rows, int width,
                               const int8_t *query, int32_t *out)
{
    i2v_code_dots_body(codes, n_rows, width, query, out);
}
#endif

static void i2v_code_dots_baseline(const uint8_t *codes, int64_t n_rows, int width,
                                   const int8_t *query, int32_t *out)
{
    i2v_code_dots_body(codes, n_rows, width, query, out);
}

/* 1 where the CPU has AVX-512 VNNI (x86-64, GCC or clang), else 0. */
static int i2v_cpu_has_vnni(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vnni") != 0;
#else
    return 0;
#endif
}

static void i2v_code_dots(const uint8_t *codes, int64_t n_rows, int width,
                          const int8_t *query, int32_t *out)
{
    /* Resolved on the first call; threads racing here store the same value. */
    static i2v_code_dots_fn chosen = 0;
    if (!chosen) {
        chosen = i2v_code_dots_baseline;
#ifdef I2V_DISPATCH
        if (i2v_cpu_has_vnni())
            chosen = i2v_code_dots_vnni;
#endif
    }
    chosen(codes, n_rows, width, query, out);
}

/* 1 where the int8 pass beats one float32 matrix-vector product: an x86-64
 * CPU with VNNI (native or portable build), or a native build elsewhere,
 * whose compiler picks the machine's own byte dot products. */
static int i2v_fast_int8(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    return i2v_cpu_has_vnni();
#else
    return I2V_NATIVE;
#endif
}

#endif
