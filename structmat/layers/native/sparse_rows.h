/* sparse_rows.h: y = base + S x for one input vector and a sparse matrix S (rows x cols), the row kernels shared by
 * the sparse layers' compiled fast path (sparse_kernels.c, built by structmat.layers.native) and the C speed
 * benchmark (structmat/speed_c/sparse_plan.h, used by kernel_sparse.c, kernel_sparse_product.c and
 * kernel_lowrank_sparse.c). Header-only: every function is static inline, so each program compiles its own copy
 * with its own flags and nothing is exported.
 *
 * Two layouts, both derived from CSR (int32 row pointers and column indices, float32 values):
 *
 * - CSR with 16-bit column indices (cols <= 65536), sm_rows_csr16: 16-bit column indices are read four at a time
 *   with one 8-byte load and split with shifts, the inputs they name are loaded one by one into the lanes of a
 *   vector, and each run of 8 stored values is one vector multiply-add (runs of 16 on two accumulators, then a run
 *   of 8, then the last values one by one). On AMD Zen cores this beats AVX-512 gathers (about 5 ns per 16-lane
 *   gather) and a column-mask format expanded with vexpandps (docs/benchmarks/speed.md, "Sparse product at batch 1,
 *   formats in C"). Without AVX2 and FMA (or with -DSM_NO_VECTOR_EXTENSIONS): plain C with four accumulators.
 * - Chunks (AVX-512 only), sm_rows_chunks: each row of S cut into chunks of at most SM_CHUNK_LANES = 16 consecutive
 *   stored values whose columns lie in a window of SM_CHUNK_WIDTH = 64 columns starting at the 16-column boundary
 *   at or below the chunk's first column (so that the four loads of x are cache-line aligned when x is: a 64-byte
 *   load across two lines costs two), or at cols - 64 near the end; per chunk the window's start column, 16 lane
 *   numbers (column - start, one byte each) and 16 values, zero-padded. One chunk is four vector loads of x, two
 *   two-source permutes (vpermt2ps) that put each value's input in its lane from the window's first and second 32
 *   columns, a blend on the lane numbers' bit 5, and one FMA: about 14 values per chunk at a quarter density, no
 *   gathers, no masked loads (padding lanes multiply zeros). Windows of 32 columns (one permute) held half as many
 *   values per chunk and streamed 1.8 times the bytes per value: 31 against 23 us on a 1000 x 1280 matrix at a
 *   quarter density (docs/benchmarks/sparse-gemv/formats.c). The padded values must be 64-byte aligned; cols >= 64.
 *
 * Which one: about 1.05 ns per chunk against 0.15-0.18 ns per stored value for the CSR kernel, so the chunks pay
 * from about SM_CHUNK_MIN_FILL = 6.5 values per chunk on (CHUNK_MIN_FILL in structmat/layers/sparse_product.py is
 * the same threshold; a test checks that the two agree).
 *
 * Every output element is summed in a fixed order, so a result depends on the layout, not on the caller.
 */
#ifndef STRUCTMAT_SPARSE_ROWS_H
#define STRUCTMAT_SPARSE_ROWS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if !defined(SM_NO_VECTOR_EXTENSIONS) && (defined(__AVX2__) || defined(__AVX512F__))
#include <immintrin.h>
#endif

#if !defined(SM_NO_VECTOR_EXTENSIONS) && defined(__AVX2__) && defined(__FMA__)
#define SM_ROWS_AVX2 1
#endif
#if !defined(SM_NO_VECTOR_EXTENSIONS) && defined(__AVX512F__)
#define SM_ROWS_AVX512 1
#endif

#define SM_CHUNK_LANES 16  /* stored values per chunk at most */
#define SM_CHUNK_WIDTH 64  /* columns a chunk's values lie within */
#define SM_CHUNK_MIN_FILL 6.5
#define SM_CSR16_MAX_COLS 65536 /* column indices fit 16 bits */

#if defined(SM_ROWS_AVX2)
/* x[idx[0..7]] as one vector: two 8-byte loads of four 16-bit indices each, split with shifts (loads, not shuffles
 * or gathers, are what the core has most of), eight scalar loads inserted into the lanes */
static inline __m256 sm_rows_gather8(const uint16_t *restrict idx, const float *restrict x)
{
    uint64_t lo, hi;
    memcpy(&lo, idx, 8);
    memcpy(&hi, idx + 4, 8);
    return _mm256_set_ps(x[hi >> 48], x[(hi >> 32) & 0xFFFF], x[(hi >> 16) & 0xFFFF], x[hi & 0xFFFF], x[lo >> 48],
                         x[(lo >> 32) & 0xFFFF], x[(lo >> 16) & 0xFFFF], x[lo & 0xFFFF]);
}

static inline float sm_rows_sum8(__m256 a)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

/* y[i] = base[i] + sum_{p in row i} data[p] x[idx[p]] (base NULL: zero), idx the 16-bit column indices. The plain
 * loop is kept scalar: GCC 12 at -O3 -march=native turned it into AVX2 gathers that ran 2.5-3 times slower. */
#if !defined(SM_ROWS_AVX2) && defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))
#endif
static inline void sm_rows_csr16(int64_t rows, const int32_t *restrict indptr, const uint16_t *restrict idx,
                                 const float *restrict data, const float *restrict x, float *restrict y,
                                 const float *restrict base)
{
    for (int64_t i = 0; i < rows; ++i) {
        int64_t p = indptr[i];
        const int64_t end = indptr[i + 1];
        float tail = 0.0f;
#if defined(SM_ROWS_AVX2)
        __m256 a = _mm256_setzero_ps(), c = _mm256_setzero_ps();
        for (; p + 16 <= end; p += 16) {
            a = _mm256_fmadd_ps(_mm256_loadu_ps(data + p), sm_rows_gather8(idx + p, x), a);
            c = _mm256_fmadd_ps(_mm256_loadu_ps(data + p + 8), sm_rows_gather8(idx + p + 8, x), c);
        }
        if (p + 8 <= end) {
            a = _mm256_fmadd_ps(_mm256_loadu_ps(data + p), sm_rows_gather8(idx + p, x), a);
            p += 8;
        }
        for (; p < end; ++p)
            tail += data[p] * x[idx[p]];
        y[i] = (base != NULL ? base[i] : 0.0f) + (sm_rows_sum8(_mm256_add_ps(a, c)) + tail);
#else
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
#if defined(__clang__)
#pragma clang loop vectorize(disable)
#endif
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

/* 1 when this build has the chunk kernel (AVX-512), else 0. */
static inline int sm_rows_chunks_available(void)
{
#if defined(SM_ROWS_AVX512)
    return 1;
#else
    return 0;
#endif
}

/* The window start of a chunk whose first column is `column`: the 16-column boundary at or below it, at most
 * cols - 64. */
static inline int64_t sm_rows_chunk_window(int64_t column, int64_t cols)
{
    const int64_t start = column / 16 * 16;
    return start < cols - SM_CHUNK_WIDTH ? start : cols - SM_CHUNK_WIDTH;
}

/* The number of chunks of S (cols >= 64, column indices in [0, cols)); sm_rows_chunk_build's chunks exactly. */
static inline int64_t sm_rows_chunk_count(int64_t rows, int64_t cols, const int32_t *indptr, const int32_t *indices)
{
    int64_t count = 0;
    for (int64_t i = 0; i < rows; ++i) {
        for (int64_t p = indptr[i]; p < indptr[i + 1];) {
            const int64_t start = sm_rows_chunk_window(indices[p], cols), q0 = p;
            while (p < indptr[i + 1] && p - q0 < SM_CHUNK_LANES && indices[p] >= start
                   && indices[p] < start + SM_CHUNK_WIDTH)
                ++p;
            ++count;
        }
    }
    return count;
}

/* Fill chunk_ptr (rows + 1), window (chunks), lanes (16 per chunk) and padded (16 per chunk) from the CSR matrix. A
 * chunk ends at 16 values, at the end of its row or at the first column past its window, so unsorted or duplicate
 * column indices still give the right product (their chunks are just emptier). */
static inline void sm_rows_chunk_build(int64_t rows, int64_t cols, const int32_t *indptr, const int32_t *indices,
                                       const float *values, int32_t *chunk_ptr, int32_t *window, uint8_t *lanes,
                                       float *padded)
{
    int64_t c = 0;
    chunk_ptr[0] = 0;
    for (int64_t i = 0; i < rows; ++i) {
        for (int64_t p = indptr[i]; p < indptr[i + 1]; ++c) {
            const int64_t start = sm_rows_chunk_window(indices[p], cols);
            int l = 0;
            window[c] = (int32_t)start;
            for (; p < indptr[i + 1] && l < SM_CHUNK_LANES && indices[p] >= start
                   && indices[p] < start + SM_CHUNK_WIDTH; ++p, ++l) {
                lanes[SM_CHUNK_LANES * c + l] = (uint8_t)(indices[p] - start);
                padded[SM_CHUNK_LANES * c + l] = values[p];
            }
            for (; l < SM_CHUNK_LANES; ++l) {
                lanes[SM_CHUNK_LANES * c + l] = 0;
                padded[SM_CHUNK_LANES * c + l] = 0.0f;
            }
        }
        chunk_ptr[i + 1] = (int32_t)c;
    }
}

/* y[i] = base[i] + S x for the chunked layout (base NULL: zero); AVX-512 only (a no-op otherwise: callers check
 * sm_rows_chunks_available()). Four accumulators hide the FMA latency. */
static inline void sm_rows_chunks(int64_t rows, const int32_t *restrict chunk_ptr, const int32_t *restrict window,
                                  const uint8_t *restrict lanes, const float *restrict padded,
                                  const float *restrict x, float *restrict y, const float *restrict base)
{
#if defined(SM_ROWS_AVX512)
#define SM_ROWS_CHUNK(acc, k)                                                                                    \
    do {                                                                                                         \
        const __m512i lane_ = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(lanes + 16 * (k))));        \
        const float *w_ = x + window[k];                                                                         \
        const __m512 low_ = _mm512_permutex2var_ps(_mm512_loadu_ps(w_), lane_, _mm512_loadu_ps(w_ + 16));       \
        const __m512 high_ = _mm512_permutex2var_ps(_mm512_loadu_ps(w_ + 32), lane_, _mm512_loadu_ps(w_ + 48));  \
        const __mmask16 upper_ = _mm512_test_epi32_mask(lane_, _mm512_set1_epi32(32));                          \
        acc = _mm512_fmadd_ps(_mm512_load_ps(padded + 16 * (k)), _mm512_mask_blend_ps(upper_, low_, high_), acc); \
    } while (0)
    for (int64_t i = 0; i < rows; ++i) {
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        int64_t k = chunk_ptr[i];
        const int64_t end = chunk_ptr[i + 1];
        for (; k + 4 <= end; k += 4) {
            SM_ROWS_CHUNK(a0, k);
            SM_ROWS_CHUNK(a1, k + 1);
            SM_ROWS_CHUNK(a2, k + 2);
            SM_ROWS_CHUNK(a3, k + 3);
        }
        for (; k < end; ++k)
            SM_ROWS_CHUNK(a0, k);
        y[i] = (base != NULL ? base[i] : 0.0f)
               + _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    }
#undef SM_ROWS_CHUNK
#else
    (void)rows, (void)chunk_ptr, (void)window, (void)lanes, (void)padded, (void)x, (void)y, (void)base;
#endif
}

#endif /* STRUCTMAT_SPARSE_ROWS_H */
