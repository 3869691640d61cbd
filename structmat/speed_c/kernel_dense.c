/* kernel_dense.c: the dense reference y = W x, W row-major (m, n); a plain vectorizable row-major loop.
 *
 * Layout (writer "dense" in structmat/speed_c/writers.py): no metadata; one float32 array W, m*n values.
 */
#include "structmat_layer.h"

static int dense_prepare(sm_layer *layer, sm_error *error)
{
    int64_t size;
    if (sm_expect_meta(layer, 0, error) || sm_expect_arrays(layer, 1, error))
        return -1;
    if (!sm_mul(layer->m, layer->n, &size))
        return sm_fail(error, "shape overflows");
    return sm_f32(layer, 0, (uint64_t)size, "W", error) != NULL ? 0 : -1;
}

static void dense_apply(const sm_layer *layer, const float *x, float *y)
{
    const size_t n = (size_t)layer->n;
    sm_gemv((size_t)layer->m, n, layer->arrays[0].data, n, x, y, 0);
}

const sm_family sm_family_dense = {1, "dense", dense_prepare, dense_apply, NULL};
