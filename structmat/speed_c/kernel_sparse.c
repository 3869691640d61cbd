/* kernel_sparse.c: plain sparsity (magnitude pruning), y = S x with S in CSR; nnz multiply-adds per product.
 *
 * Layout (writer "sparse" in structmat/speed_c/writers.py): no metadata; arrays values (float32, nnz), column
 * indices (int32, nnz), row pointers (int32, m + 1). prepare derives the row kernels' layout (sparse_plan.h: chunks
 * of up to 16 values within 64 columns with AVX-512, else 16-bit column indices, else the file's CSR).
 */
#include "sparse_plan.h"

static void sparse_release(sm_layer *layer)
{
    if (layer->plan != NULL)
        sm_csr_plan_free(layer->plan);
    sm_free(layer->plan);
    layer->plan = NULL;
}

static int sparse_prepare(sm_layer *layer, sm_error *error)
{
    int64_t nnz;
    const int32_t *indptr;
    if (sm_expect_meta(layer, 0, error) || sm_expect_arrays(layer, 3, error))
        return -1;
    nnz = (int64_t)layer->arrays[0].count;
    indptr = sm_i32(layer, 2, (uint64_t)layer->m + 1, "row pointers", error);
    if (sm_f32(layer, 0, (uint64_t)nnz, "values", error) == NULL || indptr == NULL
        || sm_i32(layer, 1, (uint64_t)nnz, "column indices", error) == NULL)
        return -1;
    if (sm_check_csr(layer->m, layer->n, nnz, indptr, layer->arrays[1].data, "sparse", error))
        return -1;
    layer->plan = sm_alloc(sizeof(sm_csr_plan));
    if (layer->plan == NULL)
        return sm_fail(error, "out of memory");
    if (sm_csr_plan_init(layer->plan, layer->m, layer->n, indptr, layer->arrays[1].data, layer->arrays[0].data,
                         error)) {
        sparse_release(layer);
        return -1;
    }
    return 0;
}

static void sparse_apply(const sm_layer *layer, const float *x, float *y)
{
    sm_csr_plan_apply(layer->plan, x, y);
}

const sm_family sm_family_sparse = {8, "sparse", sparse_prepare, sparse_apply, sparse_release};
