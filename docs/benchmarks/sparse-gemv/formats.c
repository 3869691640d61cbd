/* formats.c: y = S x on one core for a random 1000 x 1280 matrix keeping a quarter of its entries (the classifier's
 * shape and share in docs/benchmarks/speed.md), stored in several formats, against the dense AVX-512 loop.
 * Reproduces the table "Sparse product at batch 1, formats in C" of docs/benchmarks/speed.md:
 *
 *     cc -O3 -march=native formats.c -o formats -lm && taskset -c 0 ./formats [k]
 *
 * keeps one entry in k at random (default 4: a quarter). Needs AVX-512F (vexpandps, vpermt2ps, 16-lane gathers).
 * Prints the best of 300 runs per format, in microseconds, and the ratio to the dense loop; every format's output is
 * checked against the dense one.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROWS 1000
#define COLS 1280
#define NB (COLS / 16)

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int32_t indptr[ROWS + 1];
static int32_t *col32;
static uint16_t *col16, masks[ROWS * NB];
static float *values, *dense, x[COLS];

/* dense: two 16-lane FMAs per 32 entries */
static void dense_rows(float *y)
{
    for (int i = 0; i < ROWS; ++i) {
        __m512 a = _mm512_setzero_ps(), c = _mm512_setzero_ps();
        for (int b = 0; b < NB; b += 2) {
            a = _mm512_fmadd_ps(_mm512_loadu_ps(dense + (size_t)i * COLS + 16 * b), _mm512_loadu_ps(x + 16 * b), a);
            c = _mm512_fmadd_ps(_mm512_loadu_ps(dense + (size_t)i * COLS + 16 * b + 16),
                                _mm512_loadu_ps(x + 16 * b + 16), c);
        }
        y[i] = _mm512_reduce_add_ps(_mm512_add_ps(a, c));
    }
}

/* CSR, scalar, four partial sums (the C runner's kernel before AVX2 assembly) */
__attribute__((optimize("no-tree-vectorize"))) static void csr_scalar(float *y)
{
    for (int i = 0; i < ROWS; ++i) {
        float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        int p = indptr[i];
        for (; p + 4 <= indptr[i + 1]; p += 4) {
            a0 += values[p] * x[col32[p]];
            a1 += values[p + 1] * x[col32[p + 1]];
            a2 += values[p + 2] * x[col32[p + 2]];
            a3 += values[p + 3] * x[col32[p + 3]];
        }
        for (; p < indptr[i + 1]; ++p)
            a0 += values[p] * x[col32[p]];
        y[i] = (a0 + a1) + (a2 + a3);
    }
}

/* CSR, 16-lane AVX-512 gathers */
static void csr_gather(float *y)
{
    for (int i = 0; i < ROWS; ++i) {
        __m512 a = _mm512_setzero_ps();
        for (int p = indptr[i]; p < indptr[i + 1]; p += 16) {
            const int left = indptr[i + 1] - p;
            const __mmask16 k = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
            const __m512 g = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, _mm512_maskz_loadu_epi32(k, col32 + p), x, 4);
            a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, values + p), g, a);
        }
        y[i] = _mm512_reduce_add_ps(a);
    }
}

/* column masks: per row and 16-column block a 16-bit mask, the packed values expanded into the lanes (vexpandps),
 * four rows at a time; EXPAND = 0 replaces the expand by a masked load (a wrong product: the floor of the format) */
#define MASK_KERNEL(NAME, LOAD)                                                                                  \
    static void NAME(float *y)                                                                                   \
    {                                                                                                            \
        for (int i = 0; i < ROWS; i += 4) {                                                                      \
            const float *p[4];                                                                                   \
            __m512 a[4];                                                                                         \
            for (int r = 0; r < 4; ++r) {                                                                        \
                p[r] = values + indptr[i + r];                                                                   \
                a[r] = _mm512_setzero_ps();                                                                      \
            }                                                                                                    \
            for (int b = 0; b < NB; ++b) {                                                                       \
                const __m512 xv = _mm512_loadu_ps(x + 16 * b);                                                   \
                for (int r = 0; r < 4; ++r) {                                                                    \
                    const unsigned m = masks[(i + r) * NB + b];                                                  \
                    a[r] = _mm512_fmadd_ps(LOAD((__mmask16)m, p[r]), xv, a[r]);                                  \
                    p[r] += __builtin_popcount(m);                                                               \
                }                                                                                                \
            }                                                                                                    \
            for (int r = 0; r < 4; ++r)                                                                          \
                y[i + r] = _mm512_reduce_add_ps(a[r]);                                                           \
        }                                                                                                        \
    }
MASK_KERNEL(mask_expand, _mm512_maskz_expandloadu_ps)
MASK_KERNEL(mask_floor, _mm512_maskz_loadu_ps)

/* CSR, runs of 8 values against 8 scalar loads of x assembled into a vector; indices 16-bit (four per 8-byte load,
 * the layers' row kernel) or 32-bit (two per 8-byte load, the C runner's kernel) */
static inline __m256 gather16(const uint16_t *idx)
{
    uint64_t lo, hi;
    memcpy(&lo, idx, 8);
    memcpy(&hi, idx + 4, 8);
    return _mm256_set_ps(x[hi >> 48], x[(hi >> 32) & 0xFFFF], x[(hi >> 16) & 0xFFFF], x[hi & 0xFFFF], x[lo >> 48],
                         x[(lo >> 32) & 0xFFFF], x[(lo >> 16) & 0xFFFF], x[lo & 0xFFFF]);
}

static inline __m256 gather32(const int32_t *idx)
{
    uint64_t a, b, c, d;
    memcpy(&a, idx, 8);
    memcpy(&b, idx + 2, 8);
    memcpy(&c, idx + 4, 8);
    memcpy(&d, idx + 6, 8);
    return _mm256_set_ps(x[d >> 32], x[(uint32_t)d], x[c >> 32], x[(uint32_t)c], x[b >> 32], x[(uint32_t)b],
                         x[a >> 32], x[(uint32_t)a]);
}

static inline float sum8(__m256 a)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

#define RUN_KERNEL(NAME, GATHER, IDX)                                                                            \
    static void NAME(float *y)                                                                                   \
    {                                                                                                            \
        for (int i = 0; i < ROWS; ++i) {                                                                         \
            __m256 a = _mm256_setzero_ps(), c = _mm256_setzero_ps();                                             \
            float tail = 0;                                                                                      \
            int p = indptr[i];                                                                                   \
            for (; p + 16 <= indptr[i + 1]; p += 16) {                                                           \
                a = _mm256_fmadd_ps(_mm256_loadu_ps(values + p), GATHER(IDX + p), a);                            \
                c = _mm256_fmadd_ps(_mm256_loadu_ps(values + p + 8), GATHER(IDX + p + 8), c);                    \
            }                                                                                                    \
            for (; p < indptr[i + 1]; ++p)                                                                       \
                tail += values[p] * x[IDX[p]];                                                                   \
            y[i] = sum8(_mm256_add_ps(a, c)) + tail;                                                             \
        }                                                                                                        \
    }
RUN_KERNEL(runs_16bit, gather16, col16)
RUN_KERNEL(runs_32bit, gather32, col32)

/* chunks (the layers' AVX-512 row kernel until 64-column windows): up to 16 consecutive values of a row whose columns lie within the 32
 * columns from the 16-column boundary at or below the first (two cache-line-aligned loads of x); per chunk the window's start column, 16 lane numbers (bytes) and 16 zero-padded values; one
 * two-source permute of two loads of x puts each value's input in its lane */
static int32_t chunk_ptr[ROWS + 1], *window;
static uint8_t *lanes;
static float *padded;

static int build_chunks(void)
{
    int c = 0;
    for (int i = 0; i < ROWS; ++i) {
        for (int p = indptr[i]; p < indptr[i + 1]; ++c) {
            const int start = col32[p] / 16 * 16 < COLS - 32 ? col32[p] / 16 * 16 : COLS - 32;
            int l = 0;
            window[c] = start;
            for (; p < indptr[i + 1] && l < 16 && col32[p] < start + 32; ++p, ++l) {
                lanes[16 * c + l] = (uint8_t)(col32[p] - start);
                padded[16 * c + l] = values[p];
            }
        }
        chunk_ptr[i + 1] = c;
    }
    return c;
}

#define CHUNK(acc, k)                                                                                            \
    acc = _mm512_fmadd_ps(_mm512_load_ps(padded + 16 * (size_t)(k)),                                            \
                          _mm512_permutex2var_ps(_mm512_loadu_ps(x + window[k]),                                 \
                                                 _mm512_cvtepu8_epi32(_mm_load_si128(                            \
                                                     (const __m128i *)(lanes + 16 * (size_t)(k)))),             \
                                                 _mm512_loadu_ps(x + window[k] + 16)),                           \
                          acc)

static void chunks(float *y)
{
    for (int i = 0; i < ROWS; ++i) {
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        int k = chunk_ptr[i];
        for (; k + 4 <= chunk_ptr[i + 1]; k += 4) {
            CHUNK(a0, k);
            CHUNK(a1, k + 1);
            CHUNK(a2, k + 2);
            CHUNK(a3, k + 3);
        }
        for (; k < chunk_ptr[i + 1]; ++k)
            CHUNK(a0, k);
        y[i] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    }
}

/* chunks of up to 16 values within 64 columns (the layers' AVX-512 row kernel): two two-source permutes (columns
 * 0-31 and 32-63 of the window) and a blend on the lane numbers' bit 5 */
static int32_t chunk64_ptr[ROWS + 1], *window64;
static uint8_t *lanes64;
static float *padded64;

static int build_chunks64(void)
{
    int c = 0;
    for (int i = 0; i < ROWS; ++i) {
        for (int p = indptr[i]; p < indptr[i + 1]; ++c) {
            const int start = col32[p] / 16 * 16 < COLS - 64 ? col32[p] / 16 * 16 : COLS - 64;
            int l = 0;
            window64[c] = start;
            for (; p < indptr[i + 1] && l < 16 && col32[p] < start + 64; ++p, ++l) {
                lanes64[16 * c + l] = (uint8_t)(col32[p] - start);
                padded64[16 * c + l] = values[p];
            }
        }
        chunk64_ptr[i + 1] = c;
    }
    return c;
}

#define CHUNK64(acc, k)                                                                                          \
    do {                                                                                                         \
        const __m512i idx_ = _mm512_cvtepu8_epi32(_mm_load_si128((const __m128i *)(lanes64 + 16 * (size_t)(k)))); \
        const float *w_ = x + window64[k];                                                                       \
        const __m512 lo_ = _mm512_permutex2var_ps(_mm512_loadu_ps(w_), idx_, _mm512_loadu_ps(w_ + 16));         \
        const __m512 hi_ = _mm512_permutex2var_ps(_mm512_loadu_ps(w_ + 32), idx_, _mm512_loadu_ps(w_ + 48));    \
        const __mmask16 m_ = _mm512_test_epi32_mask(idx_, _mm512_set1_epi32(32));                                \
        acc = _mm512_fmadd_ps(_mm512_load_ps(padded64 + 16 * (size_t)(k)), _mm512_mask_blend_ps(m_, lo_, hi_), acc); \
    } while (0)

static void chunks64(float *y)
{
    for (int i = 0; i < ROWS; ++i) {
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        int k = chunk64_ptr[i];
        for (; k + 4 <= chunk64_ptr[i + 1]; k += 4) {
            CHUNK64(a0, k);
            CHUNK64(a1, k + 1);
            CHUNK64(a2, k + 2);
            CHUNK64(a3, k + 3);
        }
        for (; k < chunk64_ptr[i + 1]; ++k)
            CHUNK64(a0, k);
        y[i] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    }
}

int main(int argc, char **argv)
{
    struct { const char *name; void (*fn)(float *); int exact; } formats[] = {
        {"dense (AVX-512)", dense_rows, 1}, {"CSR scalar, 4 partial sums", csr_scalar, 1},
        {"CSR, AVX-512 gathers", csr_gather, 1}, {"column masks + vexpandps", mask_expand, 1},
        {"column masks, masked load (floor, wrong)", mask_floor, 0},
        {"CSR runs of 8, 16-bit indices", runs_16bit, 1}, {"CSR runs of 8, 32-bit indices", runs_32bit, 1},
        {"chunks: 16 values in 32 columns, vpermt2ps", chunks, 1},
        {"chunks: 16 values in 64 cols, 2 vpermt2ps", chunks64, 1},
    };
    const int count = sizeof(formats) / sizeof(formats[0]);
    float *y = malloc(sizeof(float) * ROWS), *ref = malloc(sizeof(float) * ROWS);
    const int every = argc > 1 ? atoi(argv[1]) : 4;
    double best[16];
    setvbuf(stdout, NULL, _IONBF, 0);
    int nnz = 0;
    col32 = malloc(sizeof(int32_t) * ROWS * COLS);
    col16 = malloc(sizeof(uint16_t) * ROWS * COLS);
    values = malloc(sizeof(float) * ROWS * COLS);
    dense = calloc((size_t)ROWS * COLS, sizeof(float));
    srand(1);
    for (int i = 0; i < ROWS; ++i) {
        for (int j = 0; j < COLS; ++j)
            if (rand() % every == 0) {
                const float v = (float)rand() / RAND_MAX - 0.5f;
                dense[(size_t)i * COLS + j] = values[nnz] = v;
                col32[nnz] = j;
                col16[nnz++] = (uint16_t)j;
                masks[i * NB + j / 16] |= (uint16_t)(1u << (j % 16));
            }
        indptr[i + 1] = nnz;
    }
    for (int j = 0; j < COLS; ++j)
        x[j] = (float)rand() / RAND_MAX - 0.5f;
    window = malloc(sizeof(int32_t) * nnz);
    lanes = aligned_alloc(64, 16 * (size_t)nnz);
    padded = aligned_alloc(64, sizeof(float) * 16 * (size_t)nnz);
    memset(lanes, 0, 16 * (size_t)nnz);
    memset(padded, 0, sizeof(float) * 16 * (size_t)nnz);
    const int nchunks = build_chunks();
    window64 = malloc(sizeof(int32_t) * nnz);
    lanes64 = aligned_alloc(64, 16 * (size_t)nnz);
    padded64 = aligned_alloc(64, sizeof(float) * 16 * (size_t)nnz);
    memset(lanes64, 0, 16 * (size_t)nnz);
    memset(padded64, 0, sizeof(float) * 16 * (size_t)nnz);
    const int nchunks64 = build_chunks64();
    printf("%d chunks of 64 columns\n", nchunks64);
    dense_rows(ref);
    for (int k = 0; k < count; ++k) {
        best[k] = 1e9;
        for (int rep = 0; rep < 300; ++rep) {
            const double t = now();
            formats[k].fn(y);
            best[k] = fmin(best[k], now() - t);
        }
        for (int i = 0; i < ROWS && formats[k].exact; ++i)
            if (fabsf(y[i] - ref[i]) > 1e-4f * (1.0f + fabsf(ref[i]))) {
                printf("%s: wrong output at row %d\n", formats[k].name, i);
                return 1;
            }
    }
    printf("1000 x 1280, %d stored values (share %.3f), %d chunks\n", nnz, nnz / (double)(ROWS * COLS), nchunks);
    for (int k = 0; k < count; ++k)
        printf("%-42s %7.1f us  %.2f x dense\n", formats[k].name, 1e6 * best[k], best[k] / best[0]);
    return 0;
}
