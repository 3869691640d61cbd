/* sparse_kernels.c: float32 products Y = X Sᵀ of a CSR matrix S (rows x cols) with a row-major batch X
 * (batch x cols), for the sparse layers' inference fast path. Called through ctypes on the tensors' memory.
 *
 * Two kernels, chosen by the caller by batch size:
 *
 * - sm_csr_rows: one input row at a time (small batches). 16-bit column indices are read four at a time with one
 *   8-byte load and split with shifts, the inputs they name are loaded one by one into the lanes of a vector, and
 *   each run of 8 stored values is one vector multiply-add. On AMD Zen cores this beats AVX-512 gathers (about
 *   5 ns per 16-lane gather) and a column-mask format expanded with vexpandps (one expand per 16-column block
 *   costs about as much as the dense product's whole work on those 16 entries); see docs/benchmarks/speed.md.
 *   Without AVX2 and FMA: plain C with four accumulators.
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

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#define PANEL 64

#if defined(__AVX2__) && defined(__FMA__)
/* x[idx[0..7]] as one vector: two 8-byte loads of four 16-bit indices each, split with shifts (loads, not
 * shuffles or gathers, are what the core has most of), eight scalar loads inserted into the lanes */
static inline __m256 gather8(const uint16_t *restrict idx, const float *restrict x)
{
    uint64_t lo, hi;
    memcpy(&lo, idx, 8);
    memcpy(&hi, idx + 4, 8);
    return _mm256_set_ps(x[hi >> 48], x[(hi >> 32) & 0xFFFF], x[(hi >> 16) & 0xFFFF], x[hi & 0xFFFF], x[lo >> 48],
                         x[(lo >> 32) & 0xFFFF], x[(lo >> 16) & 0xFFFF], x[lo & 0xFFFF]);
}

static inline float sum8(__m256 a)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

/* y = base + S x for one input row (base NULL: zero): per row of S, its values in runs of 16 against two vectors of
 * the gathered inputs (two accumulator chains), a run of 8, then the last values one by one. */
static void csr_row(int64_t rows, const int32_t *restrict indptr, const uint16_t *restrict idx,
                    const float *restrict data, const float *restrict x, float *restrict y,
                    const float *restrict base)
{
    for (int64_t i = 0; i < rows; ++i) {
        int64_t p = indptr[i];
        const int64_t end = indptr[i + 1];
        float tail = 0.0f;
#if defined(__AVX2__) && defined(__FMA__)
        __m256 a = _mm256_setzero_ps(), c = _mm256_setzero_ps();
        for (; p + 16 <= end; p += 16) {
            a = _mm256_fmadd_ps(_mm256_loadu_ps(data + p), gather8(idx + p, x), a);
            c = _mm256_fmadd_ps(_mm256_loadu_ps(data + p + 8), gather8(idx + p + 8, x), c);
        }
        if (p + 8 <= end) {
            a = _mm256_fmadd_ps(_mm256_loadu_ps(data + p), gather8(idx + p, x), a);
            p += 8;
        }
        for (; p < end; ++p)
            tail += data[p] * x[idx[p]];
        y[i] = (base != NULL ? base[i] : 0.0f) + (sum8(_mm256_add_ps(a, c)) + tail);
#else
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
        for (; p + 4 <= end; p += 4) {
            a0 += data[p] * x[idx[p]];
            a1 += data[p + 1] * x[idx[p + 1]];
            a2 += data[p + 2] * x[idx[p + 2]];
            a3 += data[p + 3] * x[idx[p + 3]];
        }
        for (; p < end; ++p)
            tail += data[p] * x[idx[p]];
        y[i] = (base != NULL ? base[i] : 0.0f) + (((a0 + a1) + (a2 + a3)) + tail);
#endif
    }
}

/* Y (batch x rows, leading dimension ldy) = X (batch x cols, leading dimension ldx) Sᵀ, one input row at a time;
 * S in CSR with 16-bit column indices (cols <= 65536). */
void sm_csr_rows(int64_t rows, int64_t batch, const int32_t *indptr, const uint16_t *indices, const float *values,
                 const float *x, int64_t ldx, float *y, int64_t ldy)
{
    for (int64_t r = 0; r < batch; ++r)
        csr_row(rows, indptr, indices, values, x + r * ldx, y + r * ldy, NULL);
}

/* Chunked rows (AVX-512): each row of S cut into chunks of at most 16 consecutive stored values whose columns lie in
 * a window of 64 columns starting at the 16-column boundary at or below the chunk's first column (so that the four
 * loads of x are cache-line aligned when x is: a 64-byte load across two lines costs two), or at cols - 64 near the
 * end; per chunk the window's start column, 16 lane numbers (column - start, one byte each) and 16 values,
 * zero-padded. One chunk is four vector loads of x, two two-source permutes (vpermt2ps) that put each value's input
 * in its lane from the window's first and second 32 columns, a blend on the lane numbers' bit 5, and one FMA: about
 * 14 values per chunk at a quarter density, no gathers, no masked loads (padding lanes multiply zeros). Windows of
 * 32 columns (one permute) held half as many values per chunk and streamed 1.8 times the bytes per value: 31 against
 * 23 µs on a 1000 x 1280 matrix at a quarter density (docs/benchmarks/sparse-gemv/formats.c). */
int sm_chunks_available(void)
{
#if defined(__AVX512F__)
    return 1;
#else
    return 0;
#endif
}

/* The number of chunks of S (cols >= 64). */
int64_t sm_chunk_count(int64_t rows, int64_t cols, const int32_t *indptr, const int32_t *indices)
{
    int64_t count = 0;
    for (int64_t i = 0; i < rows; ++i) {
        for (int64_t p = indptr[i]; p < indptr[i + 1];) {
            const int64_t start = indices[p] / 16 * 16 < cols - 64 ? indices[p] / 16 * 16 : cols - 64;
            const int64_t q0 = p;
            while (p < indptr[i + 1] && p - q0 < 16 && indices[p] < start + 64)
                ++p;
            ++count;
        }
    }
    return count;
}

/* Fill chunk_ptr (rows + 1), window (chunks), lanes (16 per chunk) and padded (16 per chunk) from the CSR matrix. */
void sm_chunk_build(int64_t rows, int64_t cols, const int32_t *indptr, const int32_t *indices, const float *values,
                    int32_t *chunk_ptr, int32_t *window, uint8_t *lanes, float *padded)
{
    int64_t c = 0;
    chunk_ptr[0] = 0;
    for (int64_t i = 0; i < rows; ++i) {
        for (int64_t p = indptr[i]; p < indptr[i + 1]; ++c) {
            const int64_t start = indices[p] / 16 * 16 < cols - 64 ? indices[p] / 16 * 16 : cols - 64;
            int l = 0;
            window[c] = (int32_t)start;
            for (; p < indptr[i + 1] && l < 16 && indices[p] < start + 64; ++p, ++l) {
                lanes[16 * c + l] = (uint8_t)(indices[p] - start);
                padded[16 * c + l] = values[p];
            }
            for (; l < 16; ++l) {
                lanes[16 * c + l] = 0;
                padded[16 * c + l] = 0.0f;
            }
        }
        chunk_ptr[i + 1] = (int32_t)c;
    }
}

/* y = base + S x for one input row (base NULL: zero) with the chunked layout; AVX-512 only. */
static void chunk_row(int64_t rows, const int32_t *restrict chunk_ptr, const int32_t *restrict window,
                      const uint8_t *restrict lanes, const float *restrict padded, const float *restrict xr,
                      float *restrict y, const float *restrict base)
{
#if defined(__AVX512F__)
#define SM_CHUNK(acc, k)                                                                                         \
    do {                                                                                                         \
        const __m512i lane_ = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(lanes + 16 * (k))));        \
        const float *w_ = xr + window[k];                                                                        \
        const __m512 low_ = _mm512_permutex2var_ps(_mm512_loadu_ps(w_), lane_, _mm512_loadu_ps(w_ + 16));       \
        const __m512 high_ = _mm512_permutex2var_ps(_mm512_loadu_ps(w_ + 32), lane_, _mm512_loadu_ps(w_ + 48));  \
        const __mmask16 upper_ = _mm512_test_epi32_mask(lane_, _mm512_set1_epi32(32));                          \
        acc = _mm512_fmadd_ps(_mm512_load_ps(padded + 16 * (k)), _mm512_mask_blend_ps(upper_, low_, high_), acc); \
    } while (0)
    for (int64_t i = 0; i < rows; ++i) {
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        int64_t k = chunk_ptr[i];
        const int64_t end = chunk_ptr[i + 1];
        for (; k + 4 <= end; k += 4) { /* four accumulators: the FMA latency is hidden */
            SM_CHUNK(a0, k);
            SM_CHUNK(a1, k + 1);
            SM_CHUNK(a2, k + 2);
            SM_CHUNK(a3, k + 3);
        }
        for (; k < end; ++k)
            SM_CHUNK(a0, k);
        y[i] = (base != NULL ? base[i] : 0.0f)
               + _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    }
#undef SM_CHUNK
#else
    (void)rows, (void)chunk_ptr, (void)window, (void)lanes, (void)padded, (void)xr, (void)y, (void)base;
#endif
}

void sm_chunk_rows(int64_t rows, int64_t batch, const int32_t *restrict chunk_ptr, const int32_t *restrict window,
                   const uint8_t *restrict lanes, const float *restrict padded, const float *restrict x, int64_t ldx,
                   float *restrict y, int64_t ldy)
{
    for (int64_t r = 0; r < batch; ++r)
        chunk_row(rows, chunk_ptr, window, lanes, padded, x + r * ldx, y + r * ldy, NULL);
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
        chunk_row(f->rows, f->chunk_ptr, f->window, f->lanes, f->padded, x, y, base);
    else
        csr_row(f->rows, f->indptr, f->short_indices, f->values, x, y, base);
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
