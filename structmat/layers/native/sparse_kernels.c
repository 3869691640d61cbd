/* sparse_kernels.c: float32 products Y = X Sᵀ of a CSR matrix S (rows x cols) with a row-major batch X
 * (batch x cols), for the sparse layers' inference fast path. Called through ctypes on the tensors' memory.
 *
 * Kernels chosen by the caller by batch size:
 *
 * - sm_csr_rows and sm_chunk_rows: one input row at a time (small batches), on CSR with 16-bit column indices or on
 *   chunks of up to 16 values within 64 columns (AVX-512). Both are the row kernels of sparse_rows.h, which the C
 *   speed benchmark (structmat/speed_c) includes too; its comment describes them and why they beat gathers.
 * - sm_csr_panels: large batches. The batch is cut into panels of 64 rows; each panel of X is transposed into a
 *   (cols x 64) scratch that stays in L2, and every stored value adds value * (a 64-wide row of that scratch) to
 *   its output row: 4 vector FMAs per value with two alternating accumulator sets (latency hidden), no gathers.
 *   The (rows x 64) result is transposed into Y. Without AVX-512: plain C over the same panels.
 *
 * Every output element is summed in a fixed order, so results depend on the kernel, not on the batch a kernel is
 * called with.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sparse_rows.h" /* the row kernels, shared with the C speed benchmark (structmat/speed_c) */

#define PANEL 64

/* Y (batch x rows, leading dimension ldy) = X (batch x cols, leading dimension ldx) Sᵀ, one input row at a time;
 * S in CSR with 16-bit column indices (cols <= 65536). */
void sm_csr_rows(int64_t rows, int64_t batch, const int32_t *indptr, const uint16_t *indices, const float *values,
                 const float *x, int64_t ldx, float *y, int64_t ldy)
{
    for (int64_t r = 0; r < batch; ++r)
        sm_rows_csr16(rows, indptr, indices, values, x + r * ldx, y + r * ldy, NULL);
}

/* The chunked layout of sparse_rows.h (AVX-512): availability, chunk count and build, exported for ctypes. */
int sm_chunks_available(void)
{
    return sm_rows_chunks_available();
}

/* The number of chunks of S (cols >= 64). */
int64_t sm_chunk_count(int64_t rows, int64_t cols, const int32_t *indptr, const int32_t *indices)
{
    return sm_rows_chunk_count(rows, cols, indptr, indices);
}

/* Fill chunk_ptr (rows + 1), window (chunks), lanes (16 per chunk) and padded (16 per chunk) from the CSR matrix. */
void sm_chunk_build(int64_t rows, int64_t cols, const int32_t *indptr, const int32_t *indices, const float *values,
                    int32_t *chunk_ptr, int32_t *window, uint8_t *lanes, float *padded)
{
    sm_rows_chunk_build(rows, cols, indptr, indices, values, chunk_ptr, window, lanes, padded);
}

void sm_chunk_rows(int64_t rows, int64_t batch, const int32_t *restrict chunk_ptr, const int32_t *restrict window,
                   const uint8_t *restrict lanes, const float *restrict padded, const float *restrict x, int64_t ldx,
                   float *restrict y, int64_t ldy)
{
    for (int64_t r = 0; r < batch; ++r)
        sm_rows_chunks(rows, chunk_ptr, window, lanes, padded, x + r * ldx, y + r * ldy, NULL);
}

/* Y = X Sᵀ + bias (bias NULL: none) by panels of 64 input rows: scratch holds cols * 64 + rows * 64 floats (64-byte
 * aligned). */
static void csr_panels(int64_t rows, int64_t cols, int64_t batch, const int32_t *restrict indptr,
                       const int32_t *restrict indices, const float *restrict values, const float *restrict bias,
                       const float *restrict x, int64_t ldx, float *restrict y, int64_t ldy, float *restrict scratch)
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
#if defined(SM_ROWS_AVX512)
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
                    y[(b0 + r) * ldy + i] = (bias != NULL ? bias[i] : 0.0f) + yt[i * PANEL + r];
        }
    }
}

void sm_csr_panels(int64_t rows, int64_t cols, int64_t batch, const int32_t *indptr, const int32_t *indices,
                   const float *values, const float *x, int64_t ldx, float *y, int64_t ldy, float *scratch)
{
    csr_panels(rows, cols, batch, indptr, indices, values, NULL, x, ldx, y, ldy, scratch);
}

/* A whole sparse layer in one call: y = S_1 (⋯ (S_J x)) + U (Vᵀ x) + bias, for SparseLinear (J = 1),
 * SparseProductLinear and LowRankSparseLinear (J <= 1, rank >= 0). Factors are listed in the order they apply
 * (factors[0] reads x, the last writes y). Per factor, the row kernel uses the chunked layout when chunk_ptr is
 * not NULL, else the CSR row kernel on short_indices. Scratch (intermediate products, the low-rank coefficients and
 * the panel kernel's transposes) lives on the stack for small layers and is allocated per call otherwise: no state
 * is shared between calling threads. */
typedef struct sm_factor {
    int64_t rows, cols;
    const int32_t *indptr, *indices;
    const uint16_t *short_indices;
    const float *values;
    const int32_t *chunk_ptr, *window;
    const uint8_t *lanes;
    const float *padded;
} sm_factor;

typedef struct sm_sparse_layer {
    int64_t out, in, num_factors, rank, widest; /* widest: the largest dimension of any factor */
    const sm_factor *factors;
    const float *bias, *U, *V; /* U (out x rank), V (in x rank), row-major; bias may be NULL */
} sm_sparse_layer;

#define SM_STACK_FLOATS 8192 /* 32 KiB of stack at most */

static void factor_row(const sm_factor *f, const float *x, float *y, const float *base)
{
    if (f->chunk_ptr != NULL)
        sm_rows_chunks(f->rows, f->chunk_ptr, f->window, f->lanes, f->padded, x, y, base);
    else
        sm_rows_csr16(f->rows, f->indptr, f->short_indices, f->values, x, y, base);
}

/* base = bias + U (Vᵀ x) for one input row; t: rank floats */
static void lowrank_row(const sm_sparse_layer *L, const float *restrict x, float *restrict t, float *restrict base)
{
    const int64_t r = L->rank;
    for (int64_t k = 0; k < r; ++k)
        t[k] = 0.0f;
    for (int64_t j = 0; j < L->in; ++j) {
        const float xj = x[j];
        const float *restrict v = L->V + j * r;
        for (int64_t k = 0; k < r; ++k)
            t[k] += xj * v[k];
    }
    for (int64_t i = 0; i < L->out; ++i) {
        const float *restrict u = L->U + i * r;
        float sum = 0.0f;
        for (int64_t k = 0; k < r; ++k)
            sum += u[k] * t[k];
        base[i] = (L->bias != NULL ? L->bias[i] : 0.0f) + sum;
    }
}

/* Y (batch x out) = the layer applied to X (batch x in), one input row at a time. An input row that does not start on
 * a 64-byte boundary is copied to one that does first (the chunk kernel's window loads are then cache-line aligned:
 * misaligned, the product took about 20 % longer), and the intermediate vectors are aligned too. Returns 0, or -1
 * when out of memory. */
#define SM_ROUND16(n) (((n) + 15) / 16 * 16)
int sm_sparse_rows(const sm_sparse_layer *L, int64_t batch, const float *x, float *y)
{
    const int64_t wide = SM_ROUND16(L->widest);
    const int64_t need = SM_ROUND16(L->in) + 2 * wide + SM_ROUND16(L->rank) + SM_ROUND16(L->out) + 16;
    float stack[SM_STACK_FLOATS];
    float *held = need <= SM_STACK_FLOATS ? NULL : malloc(sizeof(float) * (size_t)need);
    if (need > SM_STACK_FLOATS && held == NULL)
        return -1;
    float *scratch = held != NULL ? held : stack;
    scratch += ((64 - (uintptr_t)scratch % 64) % 64) / sizeof(float);
    float *copy = scratch, *ping = copy + SM_ROUND16(L->in), *pong = ping + wide, *t = pong + wide,
          *base = t + SM_ROUND16(L->rank);
    for (int64_t b = 0; b < batch; ++b) {
        const float *in = x + b * L->in;
        float *out = y + b * L->out;
        const float *add = L->bias;
        if ((uintptr_t)in % 64 != 0 && L->num_factors > 0) {
            memcpy(copy, in, sizeof(float) * (size_t)L->in);
            in = copy;
        }
        if (L->rank > 0) {
            lowrank_row(L, in, t, base);
            add = base;
        }
        if (L->num_factors == 0) {
            for (int64_t i = 0; i < L->out; ++i)
                out[i] = add != NULL ? add[i] : 0.0f;
            continue;
        }
        for (int64_t j = 0; j < L->num_factors; ++j) {
            const int last = j == L->num_factors - 1;
            float *z = last ? out : (j % 2 == 0 ? ping : pong);
            factor_row(&L->factors[j], in, z, last ? add : NULL);
            in = z;
        }
    }
    free(held);
    return 0;
}

/* Y = the sparse factors applied to X, plus the bias, by panels of 64 input rows (the low-rank part, if any, is
 * left to the caller: a matrix product). Returns 0, or -1 when out of memory. */
int sm_sparse_panels(const sm_sparse_layer *L, int64_t batch, const float *x, float *y)
{
    const int64_t inner = L->num_factors > 1 ? (L->widest * batch + 15) / 16 * 16 : 0;
    if (L->num_factors == 0) {
        for (int64_t b = 0; b < batch; ++b)
            for (int64_t i = 0; i < L->out; ++i)
                y[b * L->out + i] = L->bias != NULL ? L->bias[i] : 0.0f;
        return 0;
    }
    float *scratch = aligned_alloc(64, sizeof(float) * (size_t)(PANEL * 2 * L->widest + 2 * inner));
    if (scratch == NULL)
        return -1;
    float *ping = scratch + PANEL * 2 * L->widest, *pong = ping + inner;
    const float *in = x;
    int64_t ld = L->in;
    for (int64_t j = 0; j < L->num_factors; ++j) {
        const sm_factor *f = &L->factors[j];
        const int last = j == L->num_factors - 1;
        float *z = last ? y : (j % 2 == 0 ? ping : pong);
        csr_panels(f->rows, f->cols, batch, f->indptr, f->indices, f->values, last ? L->bias : NULL, in, ld, z,
                   f->rows, scratch);
        in = z;
        ld = f->rows;
    }
    free(scratch);
    return 0;
}
