/* kernel_lowrank_sparse.c: low rank plus sparse, y = S x + U (V^T x); r (m + n) + nnz multiply-adds per product.
 *
 * Layout (writer "lowrank_sparse" in structmat/speed_c/writers.py): metadata [r] (r >= 0); arrays V (float32,
 * n x r, row-major), Ut = U^T (float32, r x m, row-major), then S in CSR: values (float32, nnz), column indices
 * (int32, nnz), row pointers (int32, m + 1). The sparse part runs in the layout prepare derives (sparse_plan.h:
 * chunks of up to 16 values within 64 columns with AVX-512 when they fill, else 16-bit column indices); it writes y,
 * and the low-rank part adds to it with the two row-combination passes of kernel_lowrank.c (sm_gemv_t). An empty
 * part (r = 0 or nnz = 0) costs nothing.
 *
 * Beyond 65536 columns S keeps the file's CSR and the scalar loop below, with the value and index streams prefetched
 * 1024 entries (4 KiB) ahead. The prefetch mattered for that loop on large matrices, whose S streams from memory: on
 * a 4096 x 4096 matrix with 7.7 million non-zeros, AMD EPYC (Zen 5), one core, it took 2.24 ms with it and 2.99 ms
 * without (dense C: 2.2 ms); on the in-cache 1000 x 1280 classifier it changed nothing measurable.
 */
#include "sparse_plan.h"

/* Entries ahead of the loop at which the value and index streams are prefetched. */
#define LRS_PREFETCH_AHEAD 1024

#if defined(__GNUC__)
#define LRS_PREFETCH(address) __builtin_prefetch(address)
#else
#define LRS_PREFETCH(address) ((void)0)
#endif

/* y[i] = sum_{p in row i} data[p] x[indices[p]]: the scalar CSR loop, sixteen entries per prefetch. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))
#endif
static void csr_gemv_prefetched(size_t rows, const int32_t *restrict indptr, const int32_t *restrict indices,
                                const float *restrict data, const float *restrict x, float *restrict y)
{
    const int32_t nnz = indptr[rows];
    for (size_t i = 0; i < rows; ++i) {
        float acc0 = 0.0f, acc1 = 0.0f, acc2 = 0.0f, acc3 = 0.0f;
        int32_t p = indptr[i];
        const int32_t end = indptr[i + 1];
#if defined(__clang__)
#pragma clang loop vectorize(disable)
#endif
        for (; p + 16 <= end; p += 16) {
            if (p + LRS_PREFETCH_AHEAD < nnz) { /* never form a pointer past the arrays */
                LRS_PREFETCH(data + p + LRS_PREFETCH_AHEAD);
                LRS_PREFETCH(indices + p + LRS_PREFETCH_AHEAD);
            }
            for (int q = 0; q < 16; q += 4) {
                acc0 += data[p + q] * x[indices[p + q]];
                acc1 += data[p + q + 1] * x[indices[p + q + 1]];
                acc2 += data[p + q + 2] * x[indices[p + q + 2]];
                acc3 += data[p + q + 3] * x[indices[p + q + 3]];
            }
        }
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

typedef struct lowrank_sparse_plan {
    sm_csr_plan sparse;
    float *t; /* the r intermediate values V^T x */
} lowrank_sparse_plan;

static void lowrank_sparse_release(sm_layer *layer)
{
    lowrank_sparse_plan *plan = layer->plan;
    if (plan != NULL) {
        sm_csr_plan_free(&plan->sparse);
        sm_free(plan->t);
        sm_free(plan);
    }
    layer->plan = NULL;
}

static int lowrank_sparse_prepare(sm_layer *layer, sm_error *error)
{
    int64_t r, v_size, ut_size, nnz;
    const int32_t *indptr;
    lowrank_sparse_plan *plan;
    if (sm_expect_meta(layer, 1, error) || sm_expect_arrays(layer, 5, error))
        return -1;
    r = layer->meta[0];
    if (r < 0 || r > layer->m || r > layer->n)
        return sm_fail(error, "rank must be in [0, min(m, n)]; the file says %lld", (long long)r);
    if (!sm_mul(r, layer->n, &v_size) || !sm_mul(r, layer->m, &ut_size))
        return sm_fail(error, "rank %lld overflows the array sizes", (long long)r);
    nnz = (int64_t)layer->arrays[2].count;
    indptr = sm_i32(layer, 4, (uint64_t)layer->m + 1, "row pointers", error);
    if (sm_f32(layer, 0, (uint64_t)v_size, "V", error) == NULL
        || sm_f32(layer, 1, (uint64_t)ut_size, "Ut", error) == NULL
        || sm_f32(layer, 2, (uint64_t)nnz, "values", error) == NULL || indptr == NULL
        || sm_i32(layer, 3, (uint64_t)nnz, "column indices", error) == NULL)
        return -1;
    if (sm_check_csr(layer->m, layer->n, nnz, indptr, layer->arrays[3].data, "S", error))
        return -1;
    plan = sm_alloc(sizeof(*plan));
    if (plan == NULL)
        return sm_fail(error, "out of memory");
    layer->plan = plan;
    plan->t = sm_alloc(sizeof(float) * (size_t)(r > 0 ? r : 1));
    if (plan->t == NULL) {
        lowrank_sparse_release(layer);
        return sm_fail(error, "out of memory for rank %lld", (long long)r);
    }
    if (sm_csr_plan_init(&plan->sparse, layer->m, layer->n, indptr, layer->arrays[3].data, layer->arrays[2].data,
                         error)) {
        lowrank_sparse_release(layer);
        return -1;
    }
    return 0;
}

static void lowrank_sparse_apply(const sm_layer *layer, const float *x, float *y)
{
    const size_t m = (size_t)layer->m, n = (size_t)layer->n, r = (size_t)layer->meta[0];
    const lowrank_sparse_plan *plan = layer->plan;
    float *t = plan->t;
    if (plan->sparse.layout == SM_CSR_INT32)
        csr_gemv_prefetched(m, layer->arrays[4].data, layer->arrays[3].data, layer->arrays[2].data, x, y);
    else
        sm_csr_plan_apply(&plan->sparse, x, y);
    if (r == 0)
        return;
    for (size_t k = 0; k < r; ++k)
        t[k] = 0.0f;
    sm_gemv_t(n, r, layer->arrays[0].data, r, x, t);
    sm_gemv_t(r, m, layer->arrays[1].data, m, t, y);
}

const sm_family sm_family_lowrank_sparse = {11, "lowrank_sparse", lowrank_sparse_prepare, lowrank_sparse_apply,
                                            lowrank_sparse_release};
