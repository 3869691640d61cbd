/* kernel_sparse_product.c: a product of J sparse factors, y = S_1 (S_2 (... (S_J x))), each factor in CSR
 * (Le Magoarou & Gribonval, IEEE JSTSP 2016, eq. (1)); nparams = sum_j nnz_j multiply-adds per product.
 *
 * Layout (writer "sparse_product" in structmat/speed_c/writers.py): metadata [J, d_1, ..., d_{J-1}] (the inner
 * dimensions; d_0 = m and d_J = n); arrays, for j = J-1 down to 0 (the order they are applied): values
 * (float32, nnz_j), column indices (int32, nnz_j), row pointers (int32, d_j + 1). Two workspace vectors of the
 * largest inner dimension hold the intermediate results (64-byte aligned, like the driver's input, so that the
 * chunk kernel's loads of a 64-column window are cache-line aligned). Each factor runs in the layout prepare
 * derives for it (sparse_plan.h): chunks of up to 16 values within 64 columns with AVX-512 when they fill, else
 * 16-bit column indices, else the file's CSR; on the classifier at a quarter of its weights the square factor,
 * sparser, keeps CSR while the wide one runs in chunks.
 */
#include "sparse_plan.h"

typedef struct sparse_product_plan {
    int64_t num_factors;
    sm_csr_plan *factors; /* the factor applied k-th (k = 0 is S_J) */
    float *work[2];
} sparse_product_plan;

static void sparse_product_release(sm_layer *layer)
{
    sparse_product_plan *plan = layer->plan;
    if (plan != NULL) {
        for (int64_t k = 0; plan->factors != NULL && k < plan->num_factors; ++k)
            sm_csr_plan_free(&plan->factors[k]);
        sm_free(plan->factors);
        sm_free(plan->work[0]);
        sm_free(plan->work[1]);
        sm_free(plan);
    }
    layer->plan = NULL;
}

static int sparse_product_prepare(sm_layer *layer, sm_error *error)
{
    int64_t J, widest = 1;
    sparse_product_plan *plan;
    if (layer->n_meta < 1)
        return sm_fail(error, "expected the number of factors in the metadata; found none");
    J = layer->meta[0];
    if (J < 1 || J > 64)
        return sm_fail(error, "the number of factors must be in [1, 64]; the file says %lld", (long long)J);
    if (sm_expect_meta(layer, (uint32_t)J, error) || sm_expect_arrays(layer, (uint32_t)(3 * J), error))
        return -1;
    plan = sm_alloc(sizeof(*plan));
    if (plan == NULL)
        return sm_fail(error, "out of memory");
    layer->plan = plan;
    plan->num_factors = J;
    plan->factors = sm_alloc(sizeof(sm_csr_plan) * (size_t)J); /* zero-filled: nothing to free yet */
    if (plan->factors == NULL) {
        sparse_product_release(layer);
        return sm_fail(error, "out of memory");
    }
    for (int64_t k = 0; k < J; ++k) {  /* k-th applied factor is S_{J-k}: rows d_{J-1-k}, cols d_{J-k} */
        const int64_t j = J - 1 - k;   /* 0-based index of the factor */
        const int64_t rows = j == 0 ? layer->m : layer->meta[j];
        const int64_t cols = j == J - 1 ? layer->n : layer->meta[j + 1];
        const uint32_t base = (uint32_t)(3 * k);
        const int32_t *indptr;
        int64_t nnz;
        if (rows < 1 || cols < 1 || rows > INT32_MAX) {
            sparse_product_release(layer);
            return sm_fail(error, "factor %lld has shape (%lld, %lld)", (long long)j, (long long)rows,
                           (long long)cols);
        }
        if (rows > widest)
            widest = rows;
        nnz = (int64_t)layer->arrays[base].count;
        indptr = sm_i32(layer, base + 2, (uint64_t)rows + 1, "row pointers", error);
        if (sm_f32(layer, base, (uint64_t)nnz, "values", error) == NULL || indptr == NULL
            || sm_i32(layer, base + 1, (uint64_t)nnz, "column indices", error) == NULL
            || sm_check_csr(rows, cols, nnz, indptr, layer->arrays[base + 1].data, "factor", error)
            || sm_csr_plan_init(&plan->factors[k], rows, cols, indptr, layer->arrays[base + 1].data,
                                layer->arrays[base].data, error)) {
            sparse_product_release(layer);
            return -1;
        }
    }
    plan->work[0] = sm_alloc(sizeof(float) * (size_t)widest);
    plan->work[1] = sm_alloc(sizeof(float) * (size_t)widest);
    if (plan->work[0] == NULL || plan->work[1] == NULL) {
        sparse_product_release(layer);
        return sm_fail(error, "out of memory for inner dimension %lld", (long long)widest);
    }
    return 0;
}

static void sparse_product_apply(const sm_layer *layer, const float *x, float *y)
{
    const sparse_product_plan *plan = layer->plan;
    const float *in = x;
    for (int64_t k = 0; k < plan->num_factors; ++k) {
        float *out = k == plan->num_factors - 1 ? y : plan->work[k % 2];
        sm_csr_plan_apply(&plan->factors[k], in, out);
        in = out;
    }
}

const sm_family sm_family_sparse_product = {7, "sparse_product", sparse_product_prepare, sparse_product_apply,
                                            sparse_product_release};
