/* sparse_plan.h: y = S x for one CSR matrix of a layer file, in the fastest layout this build and matrix allow;
 * used by kernel_sparse.c, kernel_sparse_product.c and kernel_lowrank_sparse.c.
 *
 * The layer file keeps plain CSR (int32 column indices and row pointers, float32 values: the writers in
 * structmat/speed_c/writers.py), so that one file serves every machine. prepare derives a copy in one of the layouts
 * of structmat/layers/native/sparse_rows.h, the row kernels the torch layers' compiled fast path runs too:
 *
 * 1. chunks of up to 16 values within 64 columns, when the build has AVX-512, S has at least 64 columns and its
 *    chunks hold at least SM_CHUNK_MIN_FILL values on average (a padded copy: about 1.5 times the values' bytes at
 *    a quarter density);
 * 2. else CSR with 16-bit column indices (runs of 8 values against vectors of the inputs they name; plain C with
 *    four partial sums without AVX2), when S has at most 65536 columns;
 * 3. else the file's CSR as it is, with sm_csr_gemv (structmat_layer.h).
 *
 * The derived copies live in the plan and are freed by sm_csr_plan_free; layouts 2 and 3 also read the file's row
 * pointers and values, layout 1 only its copies.
 */
#ifndef STRUCTMAT_SPARSE_PLAN_H
#define STRUCTMAT_SPARSE_PLAN_H

#include "sparse_rows.h"
#include "structmat_layer.h"

typedef enum sm_csr_layout { SM_CSR_INT32 = 0, SM_CSR_SHORT = 1, SM_CSR_CHUNKS = 2 } sm_csr_layout;

typedef struct sm_csr_plan {
    sm_csr_layout layout;
    int64_t rows;
    const int32_t *indptr, *indices; /* the file's CSR */
    const float *values;
    uint16_t *short_indices;         /* SM_CSR_SHORT: nnz 16-bit column indices */
    int32_t *chunk_ptr, *window;     /* SM_CSR_CHUNKS: rows + 1 chunk pointers, a window start per chunk, */
    uint8_t *lanes;                  /* 16 lane numbers and 16 zero-padded values per chunk */
    float *padded;
} sm_csr_plan;

static inline void sm_csr_plan_free(sm_csr_plan *plan)
{
    sm_free(plan->short_indices);
    sm_free(plan->chunk_ptr);
    sm_free(plan->window);
    sm_free(plan->lanes);
    sm_free(plan->padded);
    plan->short_indices = NULL, plan->chunk_ptr = NULL, plan->window = NULL, plan->lanes = NULL;
    plan->padded = NULL;
    plan->layout = SM_CSR_INT32;
}

/* Derive the layout of a CSR matrix (rows, cols) that sm_check_csr has accepted. Returns 0, or -1 after sm_fail
 * (out of memory) with nothing left allocated. */
static inline int sm_csr_plan_init(sm_csr_plan *plan, int64_t rows, int64_t cols, const int32_t *indptr,
                                   const int32_t *indices, const float *values, sm_error *error)
{
    const int64_t nnz = indptr[rows];
    memset(plan, 0, sizeof(*plan));
    plan->rows = rows, plan->indptr = indptr, plan->indices = indices, plan->values = values;
    if (nnz == 0)
        return 0;
    if (sm_rows_chunks_available() && cols >= SM_CHUNK_WIDTH) {
        const int64_t count = sm_rows_chunk_count(rows, cols, indptr, indices);
        if ((double)nnz >= SM_CHUNK_MIN_FILL * (double)count) {
            plan->chunk_ptr = sm_alloc(sizeof(int32_t) * (size_t)(rows + 1));
            plan->window = sm_alloc(sizeof(int32_t) * (size_t)count);
            plan->lanes = sm_alloc((size_t)count * SM_CHUNK_LANES);
            plan->padded = sm_alloc(sizeof(float) * (size_t)count * SM_CHUNK_LANES);
            if (plan->chunk_ptr == NULL || plan->window == NULL || plan->lanes == NULL || plan->padded == NULL) {
                sm_csr_plan_free(plan);
                return sm_fail(error, "out of memory for %lld chunks of a sparse matrix", (long long)count);
            }
            sm_rows_chunk_build(rows, cols, indptr, indices, values, plan->chunk_ptr, plan->window, plan->lanes,
                                plan->padded);
            plan->layout = SM_CSR_CHUNKS;
            return 0;
        }
    }
    if (cols <= SM_CSR16_MAX_COLS) {
        plan->short_indices = sm_alloc(sizeof(uint16_t) * (size_t)nnz);
        if (plan->short_indices == NULL)
            return sm_fail(error, "out of memory for %lld column indices", (long long)nnz);
        for (int64_t p = 0; p < nnz; ++p)
            plan->short_indices[p] = (uint16_t)indices[p];
        plan->layout = SM_CSR_SHORT;
    }
    return 0;
}

/* y = S x (all rows overwritten); x and y never alias. */
static inline void sm_csr_plan_apply(const sm_csr_plan *plan, const float *restrict x, float *restrict y)
{
    switch (plan->layout) {
    case SM_CSR_CHUNKS:
        sm_rows_chunks(plan->rows, plan->chunk_ptr, plan->window, plan->lanes, plan->padded, x, y, NULL);
        break;
    case SM_CSR_SHORT:
        sm_rows_csr16(plan->rows, plan->indptr, plan->short_indices, plan->values, x, y, NULL);
        break;
    default:
        sm_csr_gemv((size_t)plan->rows, plan->indptr, plan->indices, plan->values, x, y);
    }
}

#endif /* STRUCTMAT_SPARSE_PLAN_H */
