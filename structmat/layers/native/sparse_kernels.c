/* sparse_kernels.c: float32 products Y = X Sᵀ of a CSR matrix S (rows x cols) with a row-major batch X
 * (batch x cols), for the sparse layers' inference fast path. Called through ctypes on the tensors' memory.
 *
 * Two kernels, chosen by the caller by batch size:
 *
 * - sm_bitmask_rows: small batches. Each row of S is read as ceil(cols / 16) column blocks of 16, each described by
 *   a 16-bit mask of its stored columns; the row's values, packed in column order (exactly CSR's data array when
 *   the column indices are sorted within rows), are expanded into the 16 lanes of the block (AVX-512
 *   vexpandps) and multiplied with a dense load of x: no gathers, and the matrix streams 2 bytes of mask per block
 *   plus 4 bytes per value instead of 4 + 4 per value (CSR) or 4 per entry (dense). Four rows of S are swept
 *   together so that the four chains "next value = this value + popcount(mask)" overlap. Without AVX-512 the same
 *   masks are walked bit by bit (portable C).
 * - sm_csr_panels: large batches. The batch is cut into panels of 64 rows; each panel of X is transposed into a
 *   (cols x 64) scratch that stays in L2, and every stored value adds value * (a 64-wide row of that scratch) to
 *   its output row: 4 vector FMAs per value with two alternating accumulator sets (latency hidden), no gathers.
 *   The (rows x 64) result is transposed into Y.
 *
 * Every output element is summed in a fixed order (blocks, then lanes), so results do not depend on the batch
 * size a kernel is called with, only on the kernel.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#define PANEL 64

#if defined(__AVX512F__)
/* the packed values of one block spread into its mask's lanes: a full 16-float load then a register expand
 * (vexpandps with a memory operand is microcoded on some cores), or a masked load at the end of the array */
#define EXPAND(mask, p, safe)                                                                                    \
    ((safe) ? _mm512_maskz_expand_ps((__mmask16)(mask), _mm512_loadu_ps(p))                                     \
            : _mm512_maskz_expandloadu_ps((__mmask16)(mask), (p)))
#endif

int sm_native_has_avx512(void)
{
#if defined(__AVX512F__)
    return 1;
#else
    return 0;
#endif
}

#if defined(__AVX512F__)
/* y[r] (+)= sum over row i of S, for R = 1 input row and four rows of S at a time. */
static void bitmask_rows_1(int64_t rows, int64_t cols, const uint16_t *restrict masks,
                           const int32_t *restrict indptr, const float *restrict values,
                           const float *restrict x, float *restrict y)
{
    const int64_t nb = (cols + 15) / 16, full = cols / 16;
    const __mmask16 tail = (__mmask16)((1u << (cols % 16)) - 1u);
    int64_t i = 0;
    for (; i + 4 <= rows; i += 4) {
        const float *p0 = values + indptr[i], *p1 = values + indptr[i + 1];
        const float *p2 = values + indptr[i + 2], *p3 = values + indptr[i + 3];
        const uint16_t *k0 = masks + i * nb, *k1 = k0 + nb, *k2 = k1 + nb, *k3 = k2 + nb;
        const int safe = (int64_t)indptr[i + 4] + 16 <= (int64_t)indptr[rows];
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(),
               a3 = _mm512_setzero_ps();
        for (int64_t b = 0; b < nb; ++b) {
            const __m512 xv = b < full ? _mm512_loadu_ps(x + 16 * b) : _mm512_maskz_loadu_ps(tail, x + 16 * b);
            const unsigned m0 = k0[b], m1 = k1[b], m2 = k2[b], m3 = k3[b];
            a0 = _mm512_fmadd_ps(EXPAND(m0, p0, safe), xv, a0);
            a1 = _mm512_fmadd_ps(EXPAND(m1, p1, safe), xv, a1);
            a2 = _mm512_fmadd_ps(EXPAND(m2, p2, safe), xv, a2);
            a3 = _mm512_fmadd_ps(EXPAND(m3, p3, safe), xv, a3);
            p0 += __builtin_popcount(m0);
            p1 += __builtin_popcount(m1);
            p2 += __builtin_popcount(m2);
            p3 += __builtin_popcount(m3);
        }
        y[i] = _mm512_reduce_add_ps(a0);
        y[i + 1] = _mm512_reduce_add_ps(a1);
        y[i + 2] = _mm512_reduce_add_ps(a2);
        y[i + 3] = _mm512_reduce_add_ps(a3);
    }
    for (; i < rows; ++i) {
        const float *p = values + indptr[i];
        const uint16_t *k = masks + i * nb;
        const int safe = (int64_t)indptr[i + 1] + 16 <= (int64_t)indptr[rows];
        __m512 a = _mm512_setzero_ps();
        for (int64_t b = 0; b < nb; ++b) {
            const __m512 xv = b < full ? _mm512_loadu_ps(x + 16 * b) : _mm512_maskz_loadu_ps(tail, x + 16 * b);
            a = _mm512_fmadd_ps(EXPAND(k[b], p, safe), xv, a);
            p += __builtin_popcount(k[b]);
        }
        y[i] = _mm512_reduce_add_ps(a);
    }
}

/* Four input rows (x, x + ldx, ...) against one row of S at a time: each expanded block serves four FMAs. */
static void bitmask_rows_4(int64_t rows, int64_t cols, const uint16_t *restrict masks,
                           const int32_t *restrict indptr, const float *restrict values,
                           const float *restrict x, int64_t ldx, float *restrict y, int64_t ldy)
{
    const int64_t nb = (cols + 15) / 16, full = cols / 16;
    const __mmask16 tail = (__mmask16)((1u << (cols % 16)) - 1u);
    for (int64_t i = 0; i < rows; ++i) {
        const float *p = values + indptr[i];
        const uint16_t *k = masks + i * nb;
        const int safe = (int64_t)indptr[i + 1] + 16 <= (int64_t)indptr[rows];
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(),
               a3 = _mm512_setzero_ps();
        for (int64_t b = 0; b < nb; ++b) {
            const __mmask16 lanes = b < full ? (__mmask16)0xFFFF : tail;
            const __m512 v = EXPAND(k[b], p, safe);
            a0 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(lanes, x + 16 * b), a0);
            a1 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(lanes, x + ldx + 16 * b), a1);
            a2 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(lanes, x + 2 * ldx + 16 * b), a2);
            a3 = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(lanes, x + 3 * ldx + 16 * b), a3);
            p += __builtin_popcount(k[b]);
        }
        y[i] = _mm512_reduce_add_ps(a0);
        y[ldy + i] = _mm512_reduce_add_ps(a1);
        y[2 * ldy + i] = _mm512_reduce_add_ps(a2);
        y[3 * ldy + i] = _mm512_reduce_add_ps(a3);
    }
}
#else
static void bitmask_rows_1(int64_t rows, int64_t cols, const uint16_t *restrict masks,
                           const int32_t *restrict indptr, const float *restrict values,
                           const float *restrict x, float *restrict y)
{
    const int64_t nb = (cols + 15) / 16;
    for (int64_t i = 0; i < rows; ++i) {
        const float *p = values + indptr[i];
        const uint16_t *k = masks + i * nb;
        float lane[16] = {0};
        for (int64_t b = 0; b < nb; ++b) {
            for (unsigned m = k[b]; m; m &= m - 1u) {
                const int l = __builtin_ctz(m);
                lane[l] += *p++ * x[16 * b + l];
            }
        }
        float acc = 0.0f;
        for (int l = 0; l < 16; ++l)
            acc += lane[l];
        y[i] = acc;
    }
}

static void bitmask_rows_4(int64_t rows, int64_t cols, const uint16_t *restrict masks,
                           const int32_t *restrict indptr, const float *restrict values,
                           const float *restrict x, int64_t ldx, float *restrict y, int64_t ldy)
{
    for (int r = 0; r < 4; ++r)
        bitmask_rows_1(rows, cols, masks, indptr, values, x + r * ldx, y + r * ldy);
}
#endif

/* Y (batch x rows, leading dimension ldy) = X (batch x cols, leading dimension ldx) Sᵀ, S in CSR with the
 * column masks of its 16-column blocks (rows x ceil(cols / 16), row-major). */
void sm_bitmask_rows(int64_t rows, int64_t cols, int64_t batch, const uint16_t *masks, const int32_t *indptr,
                     const float *values, const float *x, int64_t ldx, float *y, int64_t ldy)
{
    int64_t r = 0;
    for (; r + 4 <= batch; r += 4)
        bitmask_rows_4(rows, cols, masks, indptr, values, x + r * ldx, ldx, y + r * ldy, ldy);
    for (; r < batch; ++r)
        bitmask_rows_1(rows, cols, masks, indptr, values, x + r * ldx, y + r * ldy);
}

/* Y = X Sᵀ by panels of 64 input rows: scratch holds cols * 64 + rows * 64 floats (64-byte aligned). */
void sm_csr_panels(int64_t rows, int64_t cols, int64_t batch, const int32_t *restrict indptr,
                   const int32_t *restrict indices, const float *restrict values, const float *restrict x,
                   int64_t ldx, float *restrict y, int64_t ldy, float *restrict scratch)
{
    float *restrict xt = scratch, *restrict yt = scratch + cols * PANEL;
    for (int64_t b0 = 0; b0 < batch; b0 += PANEL) {
        const int64_t width = batch - b0 < PANEL ? batch - b0 : PANEL;
        for (int64_t j0 = 0; j0 < cols; j0 += 16) {  /* xt[j][r] = x[b0 + r][j], in 16-column strips */
            const int64_t j1 = j0 + 16 < cols ? j0 + 16 : cols;
            for (int64_t r = 0; r < width; ++r)
                for (int64_t j = j0; j < j1; ++j)
                    xt[j * PANEL + r] = x[(b0 + r) * ldx + j];
            for (int64_t r = width; r < PANEL; ++r)
                for (int64_t j = j0; j < j1; ++j)
                    xt[j * PANEL + r] = 0.0f;
        }
        for (int64_t i = 0; i < rows; ++i) {
            float *restrict out = yt + i * PANEL;
#if defined(__AVX512F__)
            __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(),
                   a3 = _mm512_setzero_ps(), c0 = _mm512_setzero_ps(), c1 = _mm512_setzero_ps(),
                   c2 = _mm512_setzero_ps(), c3 = _mm512_setzero_ps();
            int32_t p = indptr[i];
            const int32_t end = indptr[i + 1];
            for (; p + 2 <= end; p += 2) {
                const float *restrict s = xt + (int64_t)indices[p] * PANEL;
                const float *restrict t = xt + (int64_t)indices[p + 1] * PANEL;
                const __m512 v = _mm512_set1_ps(values[p]), w = _mm512_set1_ps(values[p + 1]);
                a0 = _mm512_fmadd_ps(v, _mm512_load_ps(s), a0);
                a1 = _mm512_fmadd_ps(v, _mm512_load_ps(s + 16), a1);
                a2 = _mm512_fmadd_ps(v, _mm512_load_ps(s + 32), a2);
                a3 = _mm512_fmadd_ps(v, _mm512_load_ps(s + 48), a3);
                c0 = _mm512_fmadd_ps(w, _mm512_load_ps(t), c0);
                c1 = _mm512_fmadd_ps(w, _mm512_load_ps(t + 16), c1);
                c2 = _mm512_fmadd_ps(w, _mm512_load_ps(t + 32), c2);
                c3 = _mm512_fmadd_ps(w, _mm512_load_ps(t + 48), c3);
            }
            if (p < end) {
                const float *restrict s = xt + (int64_t)indices[p] * PANEL;
                const __m512 v = _mm512_set1_ps(values[p]);
                a0 = _mm512_fmadd_ps(v, _mm512_load_ps(s), a0);
                a1 = _mm512_fmadd_ps(v, _mm512_load_ps(s + 16), a1);
                a2 = _mm512_fmadd_ps(v, _mm512_load_ps(s + 32), a2);
                a3 = _mm512_fmadd_ps(v, _mm512_load_ps(s + 48), a3);
            }
            _mm512_store_ps(out, _mm512_add_ps(a0, c0));
            _mm512_store_ps(out + 16, _mm512_add_ps(a1, c1));
            _mm512_store_ps(out + 32, _mm512_add_ps(a2, c2));
            _mm512_store_ps(out + 48, _mm512_add_ps(a3, c3));
#else
            float acc[PANEL] = {0};
            for (int32_t p = indptr[i]; p < indptr[i + 1]; ++p) {
                const float *restrict s = xt + (int64_t)indices[p] * PANEL;
                const float v = values[p];
                for (int r = 0; r < PANEL; ++r)
                    acc[r] += v * s[r];
            }
            memcpy(out, acc, sizeof(acc));
#endif
        }
        for (int64_t i0 = 0; i0 < rows; i0 += 16) {  /* y[b0 + r][i] = yt[i][r] */
            const int64_t i1 = i0 + 16 < rows ? i0 + 16 : rows;
            for (int64_t r = 0; r < width; ++r)
                for (int64_t i = i0; i < i1; ++i)
                    y[(b0 + r) * ldy + i] = yt[i * PANEL + r];
        }
    }
}
