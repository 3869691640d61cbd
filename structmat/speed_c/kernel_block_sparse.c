/* kernel_block_sparse.c: block sparsity in BSR, y = M x with nblocks dense br x bc blocks; nparams multiply-adds.
 *
 * Layout (writer "block_sparse" in structmat/speed_c/writers.py): metadata [br, bc]; arrays values (float32,
 * nblocks x br x bc, each block row-major), block-column indices (int32, nblocks), block-row pointers (int32,
 * ceil(m / br) + 1). Entries of edge blocks past row m or column n are zero.
 *
 * One index per block, and the loop over a block's bc columns reads bc contiguous values of x and of the block
 * as one vector: per block and block row, a vector load of x, a vector load of the block's row and one vector
 * multiply-add (for bc = 8 with AVX2: vmovups, vfmadd231ps with a memory operand). The vectors are GCC/Clang
 * vector extensions, because GCC 12 at -O3 -march=native vectorised the same loop written over plain arrays
 * only partly (scalar loads of x assembled into a vector, or no vector code at all for 1 x 8 blocks); other
 * compilers, or -DSM_NO_VECTOR_EXTENSIONS, get plain loops with the same arithmetic. Each block-row keeps br
 * lane-vector accumulators per block in flight, summed in a fixed order at its end (the blocks' accumulators,
 * then the lanes from first to last), so the result does not depend on the vector width. The shapes of the
 * fit's default set and a few more (bc in {4, 8, 16}, br in {1, 2, 4, 8}) have kernels with compile-time sizes,
 * unrolled over enough blocks for four independent accumulator chains; other shapes run a generic loop of
 * sm_dot. When bc does not divide n, x is copied into a zero-padded workspace; when br does not divide m, the
 * last block-row is computed into a small workspace and its first rows copied out.
 */
#include "structmat_layer.h"

#include <string.h>

typedef void (*bsr_rows_fn)(size_t block_rows, const int32_t *restrict indptr, const int32_t *restrict cols,
                            const float *restrict values, const float *restrict x, float *restrict y);

/* bsr_vecBC: BC float lanes. Macros, not functions, work on them (a vector passed to or returned from a function
 * changes the ABI with the instruction set, which GCC warns about): BSR_LOAD (unaligned), BSR_FMA (acc += a * b
 * lane by lane), BSR_ADD (acc += a) and BSR_LANE (one lane). */
#if defined(__GNUC__) && !defined(SM_NO_VECTOR_EXTENSIONS)
#define BSR_VECTOR(BC) typedef float bsr_vec##BC __attribute__((vector_size(4 * (BC))));
#define BSR_FMA(acc, a, b) ((acc) += (a) * (b))
#define BSR_ADD(acc, a) ((acc) += (a))
#define BSR_LANE(v, l) ((v)[l])
#else
#define BSR_VECTOR(BC) typedef struct { float lane[BC]; } bsr_vec##BC;
#define BSR_FMA(acc, a, b)                                                                                       \
    for (size_t l_ = 0; l_ < sizeof(acc) / sizeof(float); ++l_)                                                  \
        (acc).lane[l_] += (a).lane[l_] * (b).lane[l_]
#define BSR_ADD(acc, a)                                                                                          \
    for (size_t l_ = 0; l_ < sizeof(acc) / sizeof(float); ++l_)                                                  \
        (acc).lane[l_] += (a).lane[l_]
#define BSR_LANE(v, l) ((v).lane[l])
#endif
#define BSR_LOAD(v, p) memcpy(&(v), (p), sizeof(v))

BSR_VECTOR(4)
BSR_VECTOR(8)
BSR_VECTOR(16)

/* y[I br + r] = sum over the blocks p of block-row I of sum_c values[p][r][c] x[cols[p] bc + c], for the
 * block_rows block-rows starting at indptr (positions in cols and values are absolute); U blocks in flight. */
#define BSR_ROWS(BR, BC, U)                                                                                       \
    static void bsr_rows_##BR##x##BC(size_t block_rows, const int32_t *restrict indptr,                          \
                                     const int32_t *restrict cols, const float *restrict values,                 \
                                     const float *restrict x, float *restrict y)                                 \
    {                                                                                                            \
        for (size_t I = 0; I < block_rows; ++I) {                                                                \
            bsr_vec##BC acc[U][BR], xv, v;                                                                       \
            memset(acc, 0, sizeof(acc));                                                                         \
            int32_t p = indptr[I];                                                                               \
            const int32_t end = indptr[I + 1];                                                                   \
            for (; p + (U) <= end; p += (U))                                                                     \
                for (int u = 0; u < (U); ++u) {                                                                  \
                    const float *restrict block = values + (size_t)((BR) * (BC)) * (size_t)(p + u);              \
                    BSR_LOAD(xv, x + (size_t)(BC) * (size_t)cols[p + u]);                                        \
                    for (int r = 0; r < (BR); ++r) {                                                             \
                        BSR_LOAD(v, block + r * (BC));                                                           \
                        BSR_FMA(acc[u][r], v, xv);                                                               \
                    }                                                                                            \
                }                                                                                                \
            for (; p < end; ++p) {                                                                               \
                const float *restrict block = values + (size_t)((BR) * (BC)) * (size_t)p;                        \
                BSR_LOAD(xv, x + (size_t)(BC) * (size_t)cols[p]);                                                \
                for (int r = 0; r < (BR); ++r) {                                                                 \
                    BSR_LOAD(v, block + r * (BC));                                                               \
                    BSR_FMA(acc[0][r], v, xv);                                                                   \
                }                                                                                                \
            }                                                                                                    \
            for (int r = 0; r < (BR); ++r) {                                                                     \
                for (int u = 1; u < (U); ++u)                                                                    \
                    BSR_ADD(acc[0][r], acc[u][r]);                                                               \
                float sum = 0.0f;                                                                                \
                for (int l = 0; l < (BC); ++l)                                                                   \
                    sum += BSR_LANE(acc[0][r], l);                                                               \
                y[I * (BR) + (size_t)r] = sum;                                                                   \
            }                                                                                                    \
        }                                                                                                        \
    }

/* U = blocks in flight: at least four independent accumulator chains (U * BR >= 4). */
BSR_ROWS(1, 4, 4)
BSR_ROWS(2, 4, 2)
BSR_ROWS(4, 4, 1)
BSR_ROWS(8, 4, 1)
BSR_ROWS(1, 8, 4)
BSR_ROWS(2, 8, 2)
BSR_ROWS(4, 8, 1)
BSR_ROWS(8, 8, 1)
BSR_ROWS(1, 16, 4)
BSR_ROWS(2, 16, 2)
BSR_ROWS(4, 16, 1)
BSR_ROWS(8, 16, 1)

static bsr_rows_fn bsr_rows_for(int64_t br, int64_t bc)
{
    static const bsr_rows_fn table[3][4] = {
        {bsr_rows_1x4, bsr_rows_2x4, bsr_rows_4x4, bsr_rows_8x4},
        {bsr_rows_1x8, bsr_rows_2x8, bsr_rows_4x8, bsr_rows_8x8},
        {bsr_rows_1x16, bsr_rows_2x16, bsr_rows_4x16, bsr_rows_8x16},
    };
    const int column = br == 1 ? 0 : br == 2 ? 1 : br == 4 ? 2 : br == 8 ? 3 : -1;
    const int row = bc == 4 ? 0 : bc == 8 ? 1 : bc == 16 ? 2 : -1;
    return (row < 0 || column < 0) ? NULL : table[row][column];
}

typedef struct block_sparse_plan {
    size_t br, bc, block_rows, full_block_rows;
    bsr_rows_fn rows;  /* NULL: the generic loop */
    float *xpad;       /* ceil(n / bc) bc values, or NULL when bc divides n */
    float *ypad;       /* br values for a partial last block-row, or NULL */
} block_sparse_plan;

static void bsr_rows_generic(const block_sparse_plan *plan, size_t block_rows, const int32_t *indptr,
                             const int32_t *cols, const float *values, const float *x, float *y)
{
    const size_t br = plan->br, bc = plan->bc;
    for (size_t I = 0; I < block_rows; ++I) {
        for (size_t r = 0; r < br; ++r) {
            float sum = 0.0f;
            for (int32_t p = indptr[I]; p < indptr[I + 1]; ++p)
                sum += sm_dot(values + (br * (size_t)p + r) * bc, x + bc * (size_t)cols[p], bc);
            y[I * br + r] = sum;
        }
    }
}

static void block_sparse_release(sm_layer *layer)
{
    block_sparse_plan *plan = layer->plan;
    if (plan != NULL) {
        sm_free(plan->xpad);
        sm_free(plan->ypad);
        sm_free(plan);
    }
    layer->plan = NULL;
}

static int block_sparse_prepare(sm_layer *layer, sm_error *error)
{
    int64_t br, bc, mb, nb, nblocks, size;
    const int32_t *indptr;
    block_sparse_plan *plan;
    if (sm_expect_meta(layer, 2, error) || sm_expect_arrays(layer, 3, error))
        return -1;
    br = layer->meta[0];
    bc = layer->meta[1];
    if (br < 1 || bc < 1 || br > 4096 || bc > 4096)
        return sm_fail(error, "block shape must be in [1, 4096] x [1, 4096]; the file says %lld x %lld",
                       (long long)br, (long long)bc);
    mb = (layer->m + br - 1) / br;
    nb = (layer->n + bc - 1) / bc;
    nblocks = (int64_t)layer->arrays[1].count;
    if (!sm_mul(nblocks, br * bc, &size))
        return sm_fail(error, "%lld blocks of %lld x %lld overflow the array size", (long long)nblocks,
                       (long long)br, (long long)bc);
    indptr = sm_i32(layer, 2, (uint64_t)mb + 1, "block-row pointers", error);
    if (sm_f32(layer, 0, (uint64_t)size, "values", error) == NULL || indptr == NULL
        || sm_i32(layer, 1, (uint64_t)nblocks, "block-column indices", error) == NULL)
        return -1;
    if (sm_check_csr(mb, nb, nblocks, indptr, layer->arrays[1].data, "block_sparse", error))
        return -1;
    plan = sm_alloc(sizeof(*plan));
    if (plan == NULL)
        return sm_fail(error, "out of memory");
    layer->plan = plan;
    plan->br = (size_t)br;
    plan->bc = (size_t)bc;
    plan->block_rows = (size_t)mb;
    plan->full_block_rows = (size_t)(layer->m / br);
    plan->rows = bsr_rows_for(br, bc);
    if (layer->n % bc != 0 && (plan->xpad = sm_alloc(sizeof(float) * (size_t)(nb * bc))) == NULL) {
        block_sparse_release(layer);
        return sm_fail(error, "out of memory");
    }
    if (layer->m % br != 0 && (plan->ypad = sm_alloc(sizeof(float) * (size_t)br)) == NULL) {
        block_sparse_release(layer);
        return sm_fail(error, "out of memory");
    }
    return 0;
}

static void block_sparse_apply(const sm_layer *layer, const float *x, float *y)
{
    const block_sparse_plan *plan = layer->plan;
    const int32_t *indptr = layer->arrays[2].data, *cols = layer->arrays[1].data;
    const float *values = layer->arrays[0].data;
    const size_t full = plan->full_block_rows;
    if (plan->xpad != NULL) { /* the tail past n stays zero from sm_alloc */
        memcpy(plan->xpad, x, sizeof(float) * (size_t)layer->n);
        x = plan->xpad;
    }
    if (plan->rows != NULL)
        plan->rows(full, indptr, cols, values, x, y);
    else
        bsr_rows_generic(plan, full, indptr, cols, values, x, y);
    if (plan->ypad != NULL) {
        if (plan->rows != NULL)
            plan->rows(1, indptr + full, cols, values, x, plan->ypad);
        else
            bsr_rows_generic(plan, 1, indptr + full, cols, values, x, plan->ypad);
        memcpy(y + full * plan->br, plan->ypad, sizeof(float) * ((size_t)layer->m - full * plan->br));
    }
}

const sm_family sm_family_block_sparse = {12, "block_sparse", block_sparse_prepare, block_sparse_apply,
                                          block_sparse_release};
