/* kernel_hmatrix.c: hierarchical matrices y = W x, a sum over the leaves of a block partition, each leaf dense
 * (y_b += D_b x_b) or low rank (y_b += U_b (V_b^T x_b)) with its own rank (Hackbusch, "Hierarchical Matrices:
 * Algorithms and Analysis", Springer 2015, Section 7.1, the matrix-vector product). Cost: nparams multiply-adds.
 * The structure is that of structmat/matrices/hmatrix.py; one kernel serves the families "hmatrix" (this file),
 * "hodlr" and "hedlr" (kernel_hodlr.c and kernel_hedlr.c reuse the functions below; only the partition differs).
 * With stored permutations (M[row_order[i], col_order[j]] = H[i, j]) x is gathered by col_order and the core's
 * output is scattered by row_order.
 *
 * Layout (writer _hmatrix_layout in structmat/speed_c/writers.py):
 *   metadata  [L, has_row_order, has_col_order]
 *   arrays    values (float32, nparams): per leaf, in table order, a dense leaf as D_b^T (n_b x m_b row-major)
 *             and a low-rank leaf as V_b^T (r_b x n_b row-major) then U_b^T (r_b x m_b row-major);
 *             leaves (int32, 6 L): rows (r0, r1, c0, c1, rank, offset), rank -1 = dense, the HMatrix leaf table;
 *             then row_order (int32, m) if has_row_order, then col_order (int32, n) if has_col_order.
 * Both passes of a low-rank leaf stream contiguous rows: t = V_b^T x_b (r_b dot products of length n_b), then
 * y_b += (U_b^T)^T t (r_b rows of length m_b combined); a dense leaf combines the n_b rows of D_b^T.
 */
#include "structmat_layer.h"

#include <stdlib.h>

int hmatrix_prepare(sm_layer *layer, sm_error *error);
void hmatrix_apply(const sm_layer *layer, const float *x, float *y);
void hmatrix_release(sm_layer *layer);

#define HMATRIX_MAX_LEAVES ((int64_t)1 << 26)

typedef struct hmatrix_plan {
    int64_t num_leaves;
    const int32_t *leaves;                /* the table, 6 values per leaf */
    const float *values;
    const int32_t *row_order, *col_order; /* NULL when not stored */
    float *t, *x_gathered, *y_core;       /* workspaces: max rank, n, m */
    void *memory;
} hmatrix_plan;

void hmatrix_release(sm_layer *layer)
{
    hmatrix_plan *plan = layer->plan;
    if (plan != NULL) {
        sm_free(plan->memory);
        free(plan);
    }
    layer->plan = NULL;
}

static int hmatrix_fail(sm_layer *layer, hmatrix_plan *plan, int status)
{
    layer->plan = plan;
    hmatrix_release(layer);
    return status;
}

int hmatrix_prepare(sm_layer *layer, sm_error *error)
{
    if (sm_expect_meta(layer, 3, error))
        return -1;
    const int64_t L = layer->meta[0], has_rows = layer->meta[1], has_cols = layer->meta[2];
    if (L < 1 || L > HMATRIX_MAX_LEAVES)
        return sm_fail(error, "the number of leaves must be in [1, 2^26]; the file says %lld", (long long)L);
    if ((has_rows != 0 && has_rows != 1) || (has_cols != 0 && has_cols != 1))
        return sm_fail(error, "has_row_order and has_col_order must be 0 or 1; got %lld and %lld",
                       (long long)has_rows, (long long)has_cols);
    if (sm_expect_arrays(layer, (uint32_t)(2 + has_rows + has_cols), error))
        return -1;
    const int32_t *table = sm_i32(layer, 1, (uint64_t)(6 * L), "leaves", error);
    if (table == NULL)
        return -1;
    const int64_t m = layer->m, n = layer->n;
    int64_t total = 0, area = 0, max_rank = 1;
    for (int64_t b = 0; b < L; ++b) {
        const int32_t *leaf = table + 6 * b;
        const int64_t r0 = leaf[0], r1 = leaf[1], c0 = leaf[2], c1 = leaf[3], rank = leaf[4], offset = leaf[5];
        int64_t size, block;
        if (r0 < 0 || r1 > m || r0 >= r1 || c0 < 0 || c1 > n || c0 >= c1)
            return sm_fail(error, "leaf %lld = rows [%lld, %lld) x cols [%lld, %lld) is empty or outside (%lld, %lld)",
                           (long long)b, (long long)r0, (long long)r1, (long long)c0, (long long)c1, (long long)m,
                           (long long)n);
        if (rank < -1 || rank > (r1 - r0) + (c1 - c0))
            return sm_fail(error, "leaf %lld has rank %lld; expected -1 (dense) or 0..m_b+n_b", (long long)b,
                           (long long)rank);
        if (!sm_mul(r1 - r0, c1 - c0, &block) || !sm_add(area, block, &area))
            return sm_fail(error, "leaf sizes overflow");
        if (rank < 0)
            size = block;
        else if (!sm_mul(rank, (r1 - r0) + (c1 - c0), &size))
            return sm_fail(error, "leaf %lld overflows", (long long)b);
        if (offset != total)
            return sm_fail(error, "leaf %lld starts at %lld; the sizes before it put it at %lld", (long long)b,
                           (long long)offset, (long long)total);
        if (!sm_add(total, size, &total))
            return sm_fail(error, "leaf sizes overflow");
        if (rank > max_rank)
            max_rank = rank;
    }
    if (area != m * n)
        return sm_fail(error, "the leaves cover %lld entries; a %lld x %lld matrix has %lld", (long long)area,
                       (long long)m, (long long)n, (long long)(m * n));
    const float *values = sm_f32(layer, 0, (uint64_t)total, "values", error);
    if (values == NULL)
        return -1;
    hmatrix_plan *plan = calloc(1, sizeof *plan);
    if (plan == NULL)
        return sm_fail(error, "out of memory");
    plan->num_leaves = L;
    plan->leaves = table;
    plan->values = values;
    uint32_t next = 2;
    if (has_rows) {
        plan->row_order = sm_i32(layer, next++, (uint64_t)m, "row_order", error);
        if (plan->row_order == NULL || sm_check_permutation(plan->row_order, m, "row_order", error))
            return hmatrix_fail(layer, plan, -1);
    }
    if (has_cols) {
        plan->col_order = sm_i32(layer, next++, (uint64_t)n, "col_order", error);
        if (plan->col_order == NULL || sm_check_permutation(plan->col_order, n, "col_order", error))
            return hmatrix_fail(layer, plan, -1);
    }
    const size_t floats = (size_t)max_rank + (size_t)n + (size_t)m + 3 * SM_LANES;
    plan->memory = sm_alloc(sizeof(float) * floats);
    if (plan->memory == NULL)
        return hmatrix_fail(layer, plan, sm_fail(error, "out of memory for the workspace"));
    plan->t = plan->memory;
    plan->x_gathered = plan->t + ((size_t)max_rank + SM_LANES) / SM_LANES * SM_LANES;
    plan->y_core = plan->x_gathered + ((size_t)n + SM_LANES) / SM_LANES * SM_LANES;
    layer->plan = plan;
    return 0;
}

void hmatrix_apply(const sm_layer *layer, const float *x, float *y)
{
    const hmatrix_plan *plan = layer->plan;
    const size_t m = (size_t)layer->m, n = (size_t)layer->n;
    const float *xc = x;
    float *yc = plan->row_order != NULL ? plan->y_core : y;
    if (plan->col_order != NULL) {
        sm_gather(n, plan->col_order, x, plan->x_gathered);
        xc = plan->x_gathered;
    }
    for (size_t i = 0; i < m; ++i)
        yc[i] = 0.0f;
    for (int64_t b = 0; b < plan->num_leaves; ++b) {
        const int32_t *leaf = plan->leaves + 6 * b;
        const size_t r0 = (size_t)leaf[0], c0 = (size_t)leaf[2];
        const size_t mb = (size_t)leaf[1] - r0, nb = (size_t)leaf[3] - c0;
        const float *block = plan->values + leaf[5];
        if (leaf[4] < 0) {
            sm_gemv_t(nb, mb, block, mb, xc + c0, yc + r0);
        } else if (leaf[4] > 0) {
            const size_t r = (size_t)leaf[4];
            sm_gemv(r, nb, block, nb, xc + c0, plan->t, 0);
            sm_gemv_t(r, mb, block + r * nb, mb, plan->t, yc + r0);
        }
    }
    if (plan->row_order != NULL)
        sm_scatter(m, plan->row_order, yc, y);
}

const sm_family sm_family_hmatrix = {6, "hmatrix", hmatrix_prepare, hmatrix_apply, hmatrix_release};
