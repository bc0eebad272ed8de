/* Dot product for the SGNS kernel's loop arithmetic (native builds).
 *
 * A plain loop sums into one vector register, so every multiply-add waits
 * for the one before it: at dim 100 that chain, not the arithmetic, bounds
 * the kernel. Four independent accumulators of 8 floats let the multiply-adds
 * overlap. GCC and clang vector extensions keep it free of any one instruction
 * set: each 8-float operation becomes what the target has (one AVX register,
 * two SSE registers, NEON pairs).
 */
#ifndef I2V_VECMATH_H
#define I2V_VECMATH_H

/* 8 floats with the alignment of one float: loads of any row offset. */
typedef float i2v_v8sf __attribute__((vector_size(32), aligned(4), may_alias));

static inline float i2v_dot(int n, const float *x, const float *y)
{
    i2v_v8sf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    int k = 0, j;
    float total = 0.0f;

    for (; k + 32 <= n; k += 32) {
        a0 += *(const i2v_v8sf *)(x + k) * *(const i2v_v8sf *)(y + k);
        a1 += *(const i2v_v8sf *)(x + k + 8) * *(const i2v_v8sf *)(y + k + 8);
        a2 += *(const i2v_v8sf *)(x + k + 16) * *(const i2v_v8sf *)(y + k + 16);
        a3 += *(const i2v_v8sf *)(x + k + 24) * *(const i2v_v8sf *)(y + k + 24);
    }
    for (; k + 8 <= n; k += 8)
        a0 += *(const i2v_v8sf *)(x + k) * *(const i2v_v8sf *)(y + k);
    a0 = (a0 + a1) + (a2 + a3);
    for (j = 0; j < 8; j++)
        total += a0[j];
    for (; k < n; k++)
        total += x[k] * y[k];
    return total;
}

#endif
