/* kernel_lowrank.c: low rank y = U (V^T x), nparams = r (m + n) multiply-adds per product.
 *
 * Layout (writer "lowrank" in structmat/speed_c/writers.py): metadata [r]; float32 arrays V (n, r) row-major,
 * then Ut = U^T (r, m) row-major. Both passes combine contiguous rows with sm_gemv_t: t = V^T x (n rows of
 * length r), then y = Ut^T t (r rows of length m). Measured against r dot products of length n for the first
 * pass: equal up to r = 512 on 4096x4096 and 20% faster at r = 1024, where the factors outgrow the caches.
 */
#include "structmat_layer.h"

static int lowrank_prepare(sm_layer *layer, sm_error *error)
{
    int64_t r, v_size, ut_size;
    if (sm_expect_meta(layer, 1, error) || sm_expect_arrays(layer, 2, error))
        return -1;
    r = layer->meta[0];
    if (r < 1)
        return sm_fail(error, "rank must be >= 1; the file says %lld", (long long)r);
    if (!sm_mul(r, layer->n, &v_size) || !sm_mul(r, layer->m, &ut_size))
        return sm_fail(error, "rank %lld overflows the array sizes", (long long)r);
    if (sm_f32(layer, 0, (uint64_t)v_size, "V", error) == NULL
        || sm_f32(layer, 1, (uint64_t)ut_size, "Ut", error) == NULL)
        return -1;
    layer->plan = sm_alloc(sizeof(float) * (size_t)r); /* the r intermediate values t */
    if (layer->plan == NULL)
        return sm_fail(error, "out of memory for rank %lld", (long long)r);
    return 0;
}

static void lowrank_apply(const sm_layer *layer, const float *x, float *y)
{
    const size_t m = (size_t)layer->m, n = (size_t)layer->n, r = (size_t)layer->meta[0];
    float *t = layer->plan;
    for (size_t k = 0; k < r; ++k)
        t[k] = 0.0f;
    sm_gemv_t(n, r, layer->arrays[0].data, r, x, t);
    for (size_t i = 0; i < m; ++i)
        y[i] = 0.0f;
    sm_gemv_t(r, m, layer->arrays[1].data, m, t, y);
}

static void lowrank_release(sm_layer *layer)
{
    sm_free(layer->plan);
    layer->plan = NULL;
}

const sm_family sm_family_lowrank = {2, "lowrank", lowrank_prepare, lowrank_apply, lowrank_release};
