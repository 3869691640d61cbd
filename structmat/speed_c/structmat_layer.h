/* structmat_layer.h: the interface between the layer loader, the benchmark driver and the family kernels.
 *
 * The binary layer format is documented in one place, the docstring of structmat/speed_c/layer_format.py.
 * How to add a family: /work/coord/speed_c-howto.md, in short: write kernel_<family>.c defining
 *
 *     const sm_family sm_family_<family> = {ID, "<family>", prepare, apply, release};
 *
 * The Python build step finds every kernel_*.c and generates the dispatch table sm_families[] from the file
 * names, so no other C file changes. C99 plus libc and libm; no other dependency.
 */
#ifndef STRUCTMAT_LAYER_H
#define STRUCTMAT_LAYER_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define SM_FORMAT_VERSION 1u
#define SM_HEADER_BYTES 64u
#define SM_ALIGN 64u
#define SM_DTYPE_F32 1u /* array element types in the file */
#define SM_DTYPE_I32 2u

/* One array of the layer, pointing into the loaded file (64-byte aligned). */
typedef struct sm_array {
    uint32_t dtype;  /* SM_DTYPE_F32 or SM_DTYPE_I32 */
    uint64_t count;  /* number of elements */
    const void *data;
} sm_array;

/* A loaded layer: y = W x (+ bias), W of shape (m, n) = (out_features, in_features). */
typedef struct sm_layer {
    uint32_t family_id;
    int64_t m, n;
    uint32_t n_meta;        /* the family's integer metadata */
    const int64_t *meta;
    uint32_t n_arrays;      /* the family's arrays, in the order its writer emits them */
    const sm_array *arrays;
    const float *bias;      /* m values, or NULL; added by the driver, not by the kernel */
    void *plan;             /* owned by the family: set by prepare, freed by release */
    void *storage_;         /* private to the loader */
    sm_array *array_table_; /* private to the loader */
    int64_t *meta_table_;   /* private to the loader */
} sm_layer;

/* A one-line error message (no newline). */
typedef struct sm_error {
    char message[512];
} sm_error;

/* What a family supplies. prepare() checks that meta and arrays are consistent with (m, n) using the
 * helpers below (every count from the file is untrusted), may allocate a plan (offsets, workspace), and
 * returns 0, or -1 after sm_fail() having freed whatever it allocated. apply() computes y = W x,
 * overwriting all m outputs; x and y never alias. release() frees the plan (NULL if nothing to free). */
typedef struct sm_family {
    uint32_t id;
    const char *name;
    int (*prepare)(sm_layer *layer, sm_error *error);
    void (*apply)(const sm_layer *layer, const float *x, float *y);
    void (*release)(sm_layer *layer);
} sm_family;

/* Generated at build time from the kernel_*.c file names; NULL-terminated. */
extern const sm_family *const sm_families[];

/* ------------------------------------------------------------------ helpers for prepare (layer_io.c) */
/* Format a message into error; returns -1 so that prepare can `return sm_fail(...)`. */
int sm_fail(sm_error *error, const char *format, ...);
/* 0 if the layer has exactly `count` metadata values, else -1 with a message. */
int sm_expect_meta(const sm_layer *layer, uint32_t count, sm_error *error);
/* 0 if the layer has exactly `count` family arrays, else -1 with a message. */
int sm_expect_arrays(const sm_layer *layer, uint32_t count, sm_error *error);
/* Array `index` if it is float32 (int32) with exactly `count` elements, else NULL with a message naming it. */
const float *sm_f32(const sm_layer *layer, uint32_t index, uint64_t count, const char *name, sm_error *error);
const int32_t *sm_i32(const sm_layer *layer, uint32_t index, uint64_t count, const char *name, sm_error *error);
/* *out = a * b (a, b >= 0); returns 0 on overflow of int64 (treat as a malformed file). */
int sm_mul(int64_t a, int64_t b, int64_t *out);
/* *out = a + b (a, b >= 0); returns 0 on overflow. */
int sm_add(int64_t a, int64_t b, int64_t *out);
/* 0 if `order` (int32, length size) is a permutation of 0..size-1, else -1 with a message naming it. */
int sm_check_permutation(const int32_t *order, int64_t size, const char *name, sm_error *error);
/* 64-byte aligned, zero-filled memory (NULL if out of memory) and its release. */
void *sm_alloc(size_t bytes);
void sm_free(void *pointer);

/* ------------------------------------------------------------------ loading (layer_io.c) */
/* Read and validate a layer file; every size is checked against the file length before it is used.
 * On success fills *layer and *family (prepare has run) and returns 0; else -1 with a message. */
int sm_load_layer(const char *path, sm_layer *layer, const sm_family **family, sm_error *error);
void sm_free_layer(sm_layer *layer, const sm_family *family);
const sm_family *sm_find_family(uint32_t id);

/* ------------------------------------------------------------------ shared inner loops
 * Every kernel, dense included, uses these, so that a ratio of times measures the structure and not the
 * loop tuning. The fixed-width lane arrays let the compiler vectorize the reductions at -O3 without
 * -ffast-math (the summation order is fixed, so results do not depend on the flags' reassociation). */
#define SM_LANES 8

/* sum_j a[j] b[j] */
static inline float sm_dot(const float *restrict a, const float *restrict b, size_t n)
{
    float acc0[SM_LANES] = {0}, acc1[SM_LANES] = {0}, acc2[SM_LANES] = {0}, acc3[SM_LANES] = {0};
    size_t j = 0;
    for (; j + 4 * SM_LANES <= n; j += 4 * SM_LANES) {
        for (size_t l = 0; l < SM_LANES; ++l) {
            acc0[l] += a[j + l] * b[j + l];
            acc1[l] += a[j + SM_LANES + l] * b[j + SM_LANES + l];
            acc2[l] += a[j + 2 * SM_LANES + l] * b[j + 2 * SM_LANES + l];
            acc3[l] += a[j + 3 * SM_LANES + l] * b[j + 3 * SM_LANES + l];
        }
    }
    for (; j + SM_LANES <= n; j += SM_LANES)
        for (size_t l = 0; l < SM_LANES; ++l)
            acc0[l] += a[j + l] * b[j + l];
    float tail = 0.0f;
    for (; j < n; ++j)
        tail += a[j] * b[j];
    float sum = 0.0f;
    for (size_t l = 0; l < SM_LANES; ++l)
        sum += (acc0[l] + acc1[l]) + (acc2[l] + acc3[l]);
    return sum + tail;
}

/* y[i] = sum_j A[i, j] x[j] (or y[i] += ... when accumulate), A row-major with row stride lda: one
 * sm_dot per row. (Blocking several rows to share the loads of x measured slower with GCC 12: the lane
 * arrays of four rows no longer stay in registers.) */
static inline void sm_gemv(size_t rows, size_t cols, const float *restrict A, size_t lda,
                           const float *restrict x, float *restrict y, int accumulate)
{
    if (accumulate)
        for (size_t i = 0; i < rows; ++i)
            y[i] += sm_dot(A + i * lda, x, cols);
    else
        for (size_t i = 0; i < rows; ++i)
            y[i] = sm_dot(A + i * lda, x, cols);
}

/* y[j] += sum_i A[i, j] x[i]: y += A^T x for A row-major (rows, cols) with row stride lda, i.e. a
 * combination of A's rows; four rows per pass over y. Suits tall factors stored transposed. */
static inline void sm_gemv_t(size_t rows, size_t cols, const float *restrict A, size_t lda,
                             const float *restrict x, float *restrict y)
{
    size_t i = 0;
    for (; i + 4 <= rows; i += 4) {
        const float *restrict a0 = A + i * lda;
        const float *restrict a1 = a0 + lda;
        const float *restrict a2 = a1 + lda;
        const float *restrict a3 = a2 + lda;
        const float x0 = x[i], x1 = x[i + 1], x2 = x[i + 2], x3 = x[i + 3];
        for (size_t j = 0; j < cols; ++j)
            y[j] += (x0 * a0[j] + x1 * a1[j]) + (x2 * a2[j] + x3 * a3[j]);
    }
    for (; i < rows; ++i) {
        const float *restrict a0 = A + i * lda;
        const float x0 = x[i];
        for (size_t j = 0; j < cols; ++j)
            y[j] += x0 * a0[j];
    }
}

/* y[i] += alpha x[i] */
static inline void sm_axpy(size_t n, float alpha, const float *restrict x, float *restrict y)
{
    for (size_t i = 0; i < n; ++i)
        y[i] += alpha * x[i];
}

/* out[j] = x[order[j]] */
static inline void sm_gather(size_t n, const int32_t *restrict order, const float *restrict x,
                             float *restrict out)
{
    for (size_t j = 0; j < n; ++j)
        out[j] = x[order[j]];
}

/* out[order[i]] = y[i] */
static inline void sm_scatter(size_t n, const int32_t *restrict order, const float *restrict y,
                              float *restrict out)
{
    for (size_t i = 0; i < n; ++i)
        out[order[i]] = y[i];
}

/* y[i] = sum_{p in row i} data[p] x[indices[p]] for a CSR matrix (rows, cols) with indptr of rows + 1 entries and
 * int32 column indices. The sparse families run it only on matrices of more than 65536 columns (sparse_plan.h: below
 * that, chunks of up to 16 values within 64 columns with AVX-512, or the same runs of 8 with 16-bit indices, read
 * fewer bytes); they check indptr and indices in prepare. Compiler-generated gathers are avoided: GCC 12 at -O3
 * -march=native turned the plain loop into AVX2 gathers that ran 2.5-3x slower on this AMD EPYC (1.5-1.8 ns per
 * non-zero against 0.45-0.65 ns scalar), and AVX-512 gathers take about 5 ns per 16 lanes there. With GCC/Clang vector extensions and FMA, each run of 8
 * values is one 8-lane multiply-add against a vector assembled from 8 scalar loads of x, the indices read two at
 * a time with 8-byte loads (loads are what the core has most of): about 0.17 ns per non-zero at density 0.25,
 * against 0.3 for the scalar loop with four partial sums that serves other compilers (-DSM_NO_VECTOR_EXTENSIONS). */
#if defined(__GNUC__) && defined(__FMA__) && !defined(SM_NO_VECTOR_EXTENSIONS)
typedef float sm_csr_vec8 __attribute__((vector_size(32)));

static inline sm_csr_vec8 sm_csr_gather8(const int32_t *restrict indices, const float *restrict x)
{
    uint64_t a, b, c, d;
    memcpy(&a, indices, 8);
    memcpy(&b, indices + 2, 8);
    memcpy(&c, indices + 4, 8);
    memcpy(&d, indices + 6, 8);
    return (sm_csr_vec8){x[(uint32_t)a], x[a >> 32], x[(uint32_t)b], x[b >> 32],
                         x[(uint32_t)c], x[c >> 32], x[(uint32_t)d], x[d >> 32]};
}

static inline void sm_csr_gemv(size_t rows, const int32_t *restrict indptr, const int32_t *restrict indices,
                               const float *restrict data, const float *restrict x, float *restrict y)
{
    for (size_t i = 0; i < rows; ++i) {
        sm_csr_vec8 acc0 = {0}, acc1 = {0}, v;
        float tail = 0.0f, total = 0.0f;
        int32_t p = indptr[i];
        const int32_t end = indptr[i + 1];
        for (; p + 16 <= end; p += 16) {
            memcpy(&v, data + p, sizeof(v));
            acc0 += v * sm_csr_gather8(indices + p, x);
            memcpy(&v, data + p + 8, sizeof(v));
            acc1 += v * sm_csr_gather8(indices + p + 8, x);
        }
        for (; p < end; ++p)
            tail += data[p] * x[indices[p]];
        acc0 += acc1;
        for (int l = 0; l < 8; ++l)
            total += acc0[l];
        y[i] = total + tail;
    }
}
#else
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))
#endif
static inline void sm_csr_gemv(size_t rows, const int32_t *restrict indptr, const int32_t *restrict indices,
                               const float *restrict data, const float *restrict x, float *restrict y)
{
    for (size_t i = 0; i < rows; ++i) {
        float acc0 = 0.0f, acc1 = 0.0f, acc2 = 0.0f, acc3 = 0.0f;
        int32_t p = indptr[i];
        const int32_t end = indptr[i + 1];
#if defined(__clang__)
#pragma clang loop vectorize(disable)
#endif
        for (; p + 4 <= end; p += 4) {
            acc0 += data[p] * x[indices[p]];
            acc1 += data[p + 1] * x[indices[p + 1]];
            acc2 += data[p + 2] * x[indices[p + 2]];
            acc3 += data[p + 3] * x[indices[p + 3]];
        }
        for (; p < end; ++p)
            acc0 += data[p] * x[indices[p]];
        y[i] = (acc0 + acc1) + (acc2 + acc3);
    }
}
#endif

/* Check a CSR structure from an untrusted file: indptr[0] = 0, non-decreasing, indptr[rows] = nnz, every
 * column index in [0, cols). Returns 0 or -1 after sm_fail. (Used by the sparse families' prepare.) */
static inline int sm_check_csr(int64_t rows, int64_t cols, int64_t nnz, const int32_t *indptr,
                               const int32_t *indices, const char *name, sm_error *error)
{
    if (indptr[0] != 0 || (int64_t)indptr[rows] != nnz)
        return sm_fail(error, "%s: row pointers must run from 0 to nnz=%lld", name, (long long)nnz);
    for (int64_t i = 0; i < rows; ++i)
        if (indptr[i + 1] < indptr[i])
            return sm_fail(error, "%s: row pointers decrease at row %lld", name, (long long)i);
    for (int64_t p = 0; p < nnz; ++p)
        if (indices[p] < 0 || (int64_t)indices[p] >= cols)
            return sm_fail(error, "%s: column index %ld out of range [0, %lld)", name, (long)indices[p],
                           (long long)cols);
    return 0;
}

#endif /* STRUCTMAT_LAYER_H */
