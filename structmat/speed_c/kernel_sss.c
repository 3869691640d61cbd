/* kernel_sss.c: sequentially semiseparable y = W x, a causal forward sweep and an anticausal backward sweep
 * (Chandrasekaran, Dewilde, Gu et al., SIAM J. Matrix Anal. Appl. 27(2), 2005, eq. (1.2); the structure and the
 * stage numbering are those of structmat/matrices/sss.py, stages k = 0..K-1):
 *
 *     forward   y_k  = C_k s + D_k u_k,   s <- A_k s + B_k u_k      (s of dim d[k], starting empty)
 *     backward  y_k += G_k z,             z <- E_k z + F_k u_k      (z of dim e[k+1], starting empty)
 *
 * with u_k and y_k the k-th column and row blocks; cost nparams multiply-adds (plus padding, below). With stored
 * permutations (M[row_order[i], col_order[j]] = S[i, j]) x is gathered by col_order and the core's output is
 * scattered by row_order.
 *
 * Layout (writer "sss" in structmat/speed_c/writers.py): the SSS class's own storage, unchanged.
 *   metadata  [K, has_row_order, has_col_order, m_0..m_{K-1}, n_0..n_{K-1}, d[0..K], e[0..K]]  (3 + 4K + 2)
 *   arrays    A, B, C, D, E, F, G: float32, each the stage-by-stage concatenation of its row-major blocks
 *             (A_k is d[k+1] x d[k], B_k d[k+1] x n_k, C_k m_k x d[k], D_k m_k x n_k, E_k e[k] x e[k+1],
 *             F_k e[k] x n_k, G_k m_k x e[k+1]); then row_order (int32, m) if has_row_order, then col_order
 *             (int32, n) if has_col_order.
 *
 * How it runs. prepare() rebuilds the blocks as transposed, fused, zero-padded copies, so that a stage is a few
 * long sm_gemv_t passes (rows of a transposed block combined into the output: measured faster than row dot
 * products for the short rows SSS blocks have) instead of seven short ones:
 *   - one work vector holds, per stage, the region [ s_{k+1} | y_k | z_k ], each part padded to a multiple of
 *     SM_PAD floats, so no pass ends in a scalar remainder loop (an 80x62 block took 6.9 us, 80x64 4.5 us);
 *   - causal stage k: [A_k^T | C_k^T] (d[k] rows) times s_k plus [B_k^T | D_k^T] (n_k rows) times u_k, both
 *     into [ s_{k+1} | y_k ]; s_k is read in place from region k-1, so states are never copied;
 *   - anticausal stage k: [G_k^T | E_k^T] (e[k+1] rows) times z_{k+1} into [ y_k | z_k ], plus F_k^T (n_k rows)
 *     times u_k into z_k;
 *   - the y_k parts are copied (or scattered) into y at the end.
 */
#include "structmat_layer.h"

#include <stdlib.h>

enum { KIND_A, KIND_B, KIND_C, KIND_D, KIND_E, KIND_F, KIND_G, NUM_KINDS };
static const char *const KIND_NAMES[NUM_KINDS] = {"A", "B", "C", "D", "E", "F", "G"};
enum { FUSED_AC, FUSED_BD, FUSED_GE, FUSED_F, NUM_FUSED };
#define SSS_MAX_DIM ((int64_t)1 << 30)
#define SM_PAD 8

static size_t pad(int64_t size)
{
    return ((size_t)size + (SM_PAD - 1)) / SM_PAD * SM_PAD;
}

typedef struct sss_plan {
    int64_t num_stages;
    const int64_t *m_sizes, *n_sizes, *d, *e; /* views into the metadata */
    size_t *row_start, *col_start;            /* K + 1 offsets each into y and x */
    size_t *region;                           /* K + 1 offsets of [s_{k+1} | y_k | z_k] in work */
    size_t *offset[NUM_FUSED];                /* K offsets of each fused block */
    float *fused[NUM_FUSED];
    float *work, *x_gathered;
    const int32_t *row_order, *col_order;     /* NULL when not stored */
    void *memory;
} sss_plan;

static void sss_release(sm_layer *layer)
{
    sss_plan *plan = layer->plan;
    if (plan != NULL) {
        sm_free(plan->memory);
        free(plan);
    }
    layer->plan = NULL;
}

static int sss_fail(sm_layer *layer, sss_plan *plan, int status)
{
    layer->plan = plan;
    sss_release(layer);
    return status;
}

/* rows x cols of generator `kind` at stage k, as stored in the file */
static void block_shape(const sss_plan *p, int kind, int64_t k, int64_t *rows, int64_t *cols)
{
    const int64_t m = p->m_sizes[k], n = p->n_sizes[k], d0 = p->d[k], d1 = p->d[k + 1], e0 = p->e[k],
                  e1 = p->e[k + 1];
    switch (kind) {
    case KIND_A: *rows = d1; *cols = d0; break;
    case KIND_B: *rows = d1; *cols = n; break;
    case KIND_C: *rows = m; *cols = d0; break;
    case KIND_D: *rows = m; *cols = n; break;
    case KIND_E: *rows = e0; *cols = e1; break;
    case KIND_F: *rows = e0; *cols = n; break;
    default: *rows = m; *cols = e1; break;
    }
}

/* rows and padded width of fused block `which` at stage k */
static void fused_shape(const sss_plan *p, int which, int64_t k, size_t *rows, size_t *width)
{
    const size_t dp = pad(p->d[k + 1]), mp = pad(p->m_sizes[k]), ep = pad(p->e[k]);
    switch (which) {
    case FUSED_AC: *rows = (size_t)p->d[k]; *width = dp + mp; break;
    case FUSED_BD: *rows = (size_t)p->n_sizes[k]; *width = dp + mp; break;
    case FUSED_GE: *rows = (size_t)p->e[k + 1]; *width = mp + ep; break;
    default: *rows = (size_t)p->n_sizes[k]; *width = ep; break;
    }
}

/* which fused block generator `kind` goes to, and the column where its transpose starts */
static void placement(int kind, size_t dp, size_t mp, int *which, size_t *column)
{
    switch (kind) {
    case KIND_A: *which = FUSED_AC; *column = 0; break;  /* [A^T | C^T] */
    case KIND_C: *which = FUSED_AC; *column = dp; break;
    case KIND_B: *which = FUSED_BD; *column = 0; break;  /* [B^T | D^T] */
    case KIND_D: *which = FUSED_BD; *column = dp; break;
    case KIND_G: *which = FUSED_GE; *column = 0; break;  /* [G^T | E^T] */
    case KIND_E: *which = FUSED_GE; *column = mp; break;
    default: *which = FUSED_F; *column = 0; break;       /* F^T */
    }
}

/* out[j * width + column + i] = block[i * cols + j]: block^T placed at `column` of a fused block */
static void put_transposed(const float *block, int64_t rows, int64_t cols, float *out, size_t width, size_t column)
{
    for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j)
            out[(size_t)j * width + column + (size_t)i] = block[i * cols + j];
}

static int sss_prepare(sm_layer *layer, sm_error *error)
{
    if (layer->n_meta < 3)
        return sm_fail(error, "expected at least 3 metadata values [K, has_row_order, has_col_order]; got %u",
                       layer->n_meta);
    const int64_t K = layer->meta[0], has_rows = layer->meta[1], has_cols = layer->meta[2];
    if (K < 1 || K > ((int64_t)layer->n_meta - 5) / 4 || (int64_t)layer->n_meta != 3 + 4 * K + 2)
        return sm_fail(error, "K = %lld stages needs 3 + 4K + 2 metadata values; the file has %u", (long long)K,
                       layer->n_meta);
    if ((has_rows != 0 && has_rows != 1) || (has_cols != 0 && has_cols != 1))
        return sm_fail(error, "has_row_order and has_col_order must be 0 or 1; got %lld and %lld",
                       (long long)has_rows, (long long)has_cols);
    if (sm_expect_arrays(layer, (uint32_t)(NUM_KINDS + has_rows + has_cols), error))
        return -1;

    sss_plan *plan = calloc(1, sizeof *plan);
    if (plan == NULL)
        return sm_fail(error, "out of memory");
    plan->num_stages = K;
    plan->m_sizes = layer->meta + 3;
    plan->n_sizes = plan->m_sizes + K;
    plan->d = plan->n_sizes + K;
    plan->e = plan->d + K + 1;
    const int64_t *d = plan->d, *e = plan->e;
    if (d[0] != 0 || d[K] != 0 || e[0] != 0 || e[K] != 0)
        return sss_fail(layer, plan, sm_fail(error, "the state dims must start and end with 0"));
    int64_t rows = 0, cols = 0;
    int sums_ok = 1;
    for (int64_t k = 0; k < K && sums_ok; ++k)
        sums_ok = sm_add(rows, plan->m_sizes[k], &rows) && sm_add(cols, plan->n_sizes[k], &cols)
                  && rows <= layer->m && cols <= layer->n;
    if (!sums_ok || rows != layer->m || cols != layer->n)
        return sss_fail(layer, plan, sm_fail(error, "the stage sizes must sum to the shape (%lld, %lld)",
                                             (long long)layer->m, (long long)layer->n));
    for (int64_t k = 0; k <= K; ++k)
        if (d[k] > SSS_MAX_DIM || e[k] > SSS_MAX_DIM)
            return sss_fail(layer, plan, sm_fail(error, "state dims must be <= 2^30; got d[%lld] = %lld, e[%lld] = %lld",
                                                 (long long)k, (long long)d[k], (long long)k, (long long)e[k]));

    /* the file's arrays, exact counts */
    const float *source[NUM_KINDS];
    for (int kind = 0; kind < NUM_KINDS; ++kind) {
        int64_t total = 0;
        for (int64_t k = 0; k < K; ++k) {
            int64_t r, c, size;
            block_shape(plan, kind, k, &r, &c);
            if (!sm_mul(r, c, &size) || !sm_add(total, size, &total))
                return sss_fail(layer, plan, sm_fail(error, "the block sizes overflow"));
        }
        source[kind] = sm_f32(layer, (uint32_t)kind, (uint64_t)total, KIND_NAMES[kind], error);
        if (source[kind] == NULL)
            return sss_fail(layer, plan, -1);
    }
    uint32_t next = NUM_KINDS;
    if (has_rows) {
        plan->row_order = sm_i32(layer, next++, (uint64_t)layer->m, "row_order", error);
        if (plan->row_order == NULL || sm_check_permutation(plan->row_order, layer->m, "row_order", error))
            return sss_fail(layer, plan, -1);
    }
    if (has_cols) {
        plan->col_order = sm_i32(layer, next, (uint64_t)layer->n, "col_order", error);
        if (plan->col_order == NULL || sm_check_permutation(plan->col_order, layer->n, "col_order", error))
            return sss_fail(layer, plan, -1);
    }

    /* sizes of the fused blocks and the work vector; dims <= 2^30 and the file's sizes keep these in range */
    const size_t nK = (size_t)K;
    size_t fused_total[NUM_FUSED] = {0}, work_size = 0;
    for (int64_t k = 0; k < K; ++k) {
        for (int which = 0; which < NUM_FUSED; ++which) {
            size_t r, w;
            fused_shape(plan, which, k, &r, &w);
            fused_total[which] += r * w;
        }
        work_size += pad(d[k + 1]) + pad(plan->m_sizes[k]) + pad(e[k]);
    }
    size_t floats = work_size + pad(layer->n);
    for (int which = 0; which < NUM_FUSED; ++which)
        floats += fused_total[which];
    const size_t index_count = 3 * (nK + 1) + NUM_FUSED * nK;
    plan->memory = sm_alloc(floats * sizeof(float) + index_count * sizeof(size_t));
    if (plan->memory == NULL)
        return sss_fail(layer, plan, sm_fail(error, "out of memory for %lld stages", (long long)K));
    float *next_float = plan->memory;
    for (int which = 0; which < NUM_FUSED; ++which) {
        plan->fused[which] = next_float;
        next_float += fused_total[which];
    }
    plan->work = next_float;
    plan->x_gathered = plan->work + work_size;
    size_t *index = (size_t *)(plan->x_gathered + pad(layer->n));
    plan->row_start = index;
    plan->col_start = index + nK + 1;
    plan->region = index + 2 * (nK + 1);
    for (int which = 0; which < NUM_FUSED; ++which)
        plan->offset[which] = index + 3 * (nK + 1) + (size_t)which * nK;

    plan->row_start[0] = plan->col_start[0] = plan->region[0] = 0;
    size_t at[NUM_FUSED] = {0};
    const float *from[NUM_KINDS];
    for (int kind = 0; kind < NUM_KINDS; ++kind)
        from[kind] = source[kind];
    for (int64_t k = 0; k < K; ++k) {
        const size_t dp = pad(d[k + 1]), mp = pad(plan->m_sizes[k]);
        plan->row_start[k + 1] = plan->row_start[k] + (size_t)plan->m_sizes[k];
        plan->col_start[k + 1] = plan->col_start[k] + (size_t)plan->n_sizes[k];
        plan->region[k + 1] = plan->region[k] + dp + mp + pad(e[k]);
        for (int which = 0; which < NUM_FUSED; ++which)
            plan->offset[which][k] = at[which];
        for (int kind = 0; kind < NUM_KINDS; ++kind) {
            int which;
            size_t column;
            placement(kind, dp, mp, &which, &column);
            int64_t r, c;
            size_t fused_rows, width;
            block_shape(plan, kind, k, &r, &c);
            fused_shape(plan, which, k, &fused_rows, &width);
            put_transposed(from[kind], r, c, plan->fused[which] + at[which], width, column);
            from[kind] += r * c;
        }
        for (int which = 0; which < NUM_FUSED; ++which) {
            size_t r, w;
            fused_shape(plan, which, k, &r, &w);
            at[which] += r * w;
        }
    }
    layer->plan = plan;
    return 0;
}

static void sss_apply(const sm_layer *layer, const float *x, float *y)
{
    const sss_plan *p = layer->plan;
    const int64_t K = p->num_stages;
    const int64_t *d = p->d, *e = p->e, *m_sizes = p->m_sizes, *n_sizes = p->n_sizes;
    float *work = p->work;
    if (p->col_order != NULL) {
        sm_gather((size_t)layer->n, p->col_order, x, p->x_gathered);
        x = p->x_gathered;
    }
    for (size_t i = 0; i < p->region[K]; ++i)
        work[i] = 0.0f;
    for (int64_t k = 0; k < K; ++k) { /* causal, forward: into [s_{k+1} | y_k] */
        const size_t width = pad(d[k + 1]) + pad(m_sizes[k]);
        float *out = work + p->region[k];
        if (k > 0)
            sm_gemv_t((size_t)d[k], width, p->fused[FUSED_AC] + p->offset[FUSED_AC][k], width,
                      work + p->region[k - 1], out);
        sm_gemv_t((size_t)n_sizes[k], width, p->fused[FUSED_BD] + p->offset[FUSED_BD][k], width,
                  x + p->col_start[k], out);
    }
    for (int64_t k = K - 1; k >= 0; --k) { /* anticausal, backward: into [y_k | z_k] */
        const size_t mp = pad(m_sizes[k]), ep = pad(e[k]);
        float *out = work + p->region[k] + pad(d[k + 1]);
        if (k + 1 < K)
            sm_gemv_t((size_t)e[k + 1], mp + ep, p->fused[FUSED_GE] + p->offset[FUSED_GE][k], mp + ep,
                      work + p->region[k + 1] + pad(d[k + 2]) + pad(m_sizes[k + 1]), out);
        sm_gemv_t((size_t)n_sizes[k], ep, p->fused[FUSED_F] + p->offset[FUSED_F][k], ep, x + p->col_start[k],
                  out + mp);
    }
    for (int64_t k = 0; k < K; ++k) {
        const size_t mk = (size_t)m_sizes[k];
        const float *yk = work + p->region[k] + pad(d[k + 1]);
        if (p->row_order != NULL)
            sm_scatter(mk, p->row_order + p->row_start[k], yk, y);
        else
            for (size_t i = 0; i < mk; ++i)
                y[p->row_start[k] + i] = yk[i];
    }
}

const sm_family sm_family_sss = {3, "sss", sss_prepare, sss_apply, sss_release};
