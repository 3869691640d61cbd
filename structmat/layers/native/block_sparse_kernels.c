/* block_sparse_kernels.c: float32 products Y = X Mᵀ + b of a block-sparse matrix M (m x n, BSR: nblocks dense
 * br x bc blocks, row-major, on a grid of ceil(m / br) x ceil(n / bc)) with a row-major batch X (batch x n), for the
 * block-sparse layer's inference fast path. Called through ctypes on the tensors' memory; the bias (NULL: none) is
 * added by the kernel, so a forward pass is one call.
 *
 * - sm_bsr_rows: one input row at a time (small batches). Per block and block row, bc contiguous inputs and bc
 *   contiguous values as one vector each and one vector multiply-add (for bc = 8: one 8-lane load of x and an FMA
 *   with the block row as memory operand), several blocks in flight so that four accumulator chains hide the FMA
 *   latency; as the C runner's kernel (structmat/speed_c/kernel_block_sparse.c), which bc = 8 shapes follow here.
 *   Other shapes run plain loops.
 * - sm_bsr_panels: large batches. The batch is cut into panels of 64 rows; each panel of X is transposed into a
 *   (n x 64) scratch that stays in L2, and every stored value adds value * (a 64-wide row of that scratch) to its
 *   output row, so a block's bc columns are bc consecutive scratch rows: no gathers, one index per block, and the
 *   scratch rows loaded once for the up to four block rows processed together. The 64-wide result rows are written
 *   to Y (plus the bias) directly.
 *
 * Blocks reaching past the last column (bc does not divide n) hold entries the layer never uses: the row kernel
 * reads only the columns below n for them, the panel kernel multiplies them by zero-padded inputs. Rows past the
 * last row are never written. Every output element is summed in a fixed order for a given kernel, batch row and
 * block shape. The vectors are GCC/Clang vector extensions; -DSM_NO_VECTOR_EXTENSIONS (or another compiler) gives
 * plain loops with the same results up to rounding.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PANEL 64

#if defined(__GNUC__) && !defined(SM_NO_VECTOR_EXTENSIONS)
#define SM_VECTORS 1
typedef float v8f __attribute__((vector_size(32)));
typedef float v16f __attribute__((vector_size(64)));
#define LOAD(v, p) memcpy(&(v), (p), sizeof(v))
#endif

/* The number of blocks of block-row I that lie entirely inside the first n columns: the last block of a block-row
 * is the only one that can reach past n (block-columns increase along a block-row). */
static inline int32_t full_end(const int32_t *indptr, const int32_t *cols, int64_t I, int64_t last_col, int tail)
{
    int32_t end = indptr[I + 1];
    if (tail && end > indptr[I] && cols[end - 1] == last_col)
        --end;
    return end;
}

#ifdef SM_VECTORS
/* y[r] = b[r] + sum over the blocks of a block-row, for BR x 8 blocks, U blocks in flight (U * BR >= 4 chains). */
#define BSR_ROWS8(BR, U)                                                                                             \
    static void rows_##BR##x8(int64_t m, int64_t n, const int32_t *restrict indptr, const int32_t *restrict cols,    \
                              const float *restrict values, const float *restrict bias, const float *restrict x,     \
                              float *restrict y)                                                                     \
    {                                                                                                                \
        const int64_t block_rows = (m + (BR) - 1) / (BR), last_col = (n + 7) / 8 - 1;                                \
        const int tail = n % 8 != 0;                                                                                 \
        for (int64_t I = 0; I < block_rows; ++I) {                                                                   \
            v8f acc[U][BR], xv, v;                                                                                   \
            float sum[BR];                                                                                           \
            memset(acc, 0, sizeof(acc));                                                                             \
            int32_t p = indptr[I];                                                                                   \
            const int32_t end = full_end(indptr, cols, I, last_col, tail);                                           \
            for (; p + (U) <= end; p += (U))                                                                         \
                for (int u = 0; u < (U); ++u) {                                                                      \
                    const float *restrict block = values + (int64_t)(8 * (BR)) * (p + u);                            \
                    LOAD(xv, x + 8 * (int64_t)cols[p + u]);                                                          \
                    for (int r = 0; r < (BR); ++r) {                                                                 \
                        LOAD(v, block + 8 * r);                                                                      \
                        acc[u][r] += v * xv;                                                                         \
                    }                                                                                                \
                }                                                                                                    \
            for (; p < end; ++p) {                                                                                   \
                const float *restrict block = values + (int64_t)(8 * (BR)) * p;                                      \
                LOAD(xv, x + 8 * (int64_t)cols[p]);                                                                  \
                for (int r = 0; r < (BR); ++r) {                                                                     \
                    LOAD(v, block + 8 * r);                                                                          \
                    acc[0][r] += v * xv;                                                                             \
                }                                                                                                    \
            }                                                                                                        \
            for (int r = 0; r < (BR); ++r) {                                                                         \
                for (int u = 1; u < (U); ++u)                                                                        \
                    acc[0][r] += acc[u][r];                                                                          \
                sum[r] = ((acc[0][r][0] + acc[0][r][4]) + (acc[0][r][1] + acc[0][r][5]))                             \
                         + ((acc[0][r][2] + acc[0][r][6]) + (acc[0][r][3] + acc[0][r][7]));                          \
            }                                                                                                        \
            if (end < indptr[I + 1]) { /* the block past the last column: its first n - 8 last_col columns */        \
                const float *restrict block = values + (int64_t)(8 * (BR)) * end;                                    \
                for (int r = 0; r < (BR); ++r)                                                                       \
                    for (int64_t c = 0; c < n - 8 * last_col; ++c)                                                   \
                        sum[r] += block[8 * r + c] * x[8 * last_col + c];                                            \
            }                                                                                                        \
            const int64_t here = m - I * (BR) < (BR) ? m - I * (BR) : (BR);                                          \
            for (int64_t r = 0; r < here; ++r)                                                                       \
                y[I * (BR) + r] = (bias != NULL ? bias[I * (BR) + r] : 0.0f) + sum[r];                               \
        }                                                                                                            \
    }

BSR_ROWS8(1, 4)
BSR_ROWS8(2, 2)
BSR_ROWS8(4, 1)
BSR_ROWS8(8, 1)
#endif

/* Any block shape: plain loops, block by block. */
static void rows_generic(int64_t m, int64_t n, int64_t br, int64_t bc, const int32_t *restrict indptr,
                         const int32_t *restrict cols, const float *restrict values, const float *restrict bias,
                         const float *restrict x, float *restrict y)
{
    const int64_t block_rows = (m + br - 1) / br;
    for (int64_t I = 0; I < block_rows; ++I) {
        const int64_t here = m - I * br < br ? m - I * br : br;
        for (int64_t r = 0; r < here; ++r) {
            float sum = 0.0f;
            for (int32_t p = indptr[I]; p < indptr[I + 1]; ++p) {
                const int64_t c0 = bc * (int64_t)cols[p], width = n - c0 < bc ? n - c0 : bc;
                const float *restrict v = values + (br * (int64_t)p + r) * bc;
                for (int64_t c = 0; c < width; ++c)
                    sum += v[c] * x[c0 + c];
            }
            y[I * br + r] = (bias != NULL ? bias[I * br + r] : 0.0f) + sum;
        }
    }
}

/* Y (batch x m, leading dimension ldy) = X (batch x n, leading dimension ldx) Mᵀ + b, one input row at a time; an
 * input row that does not start on a 64-byte boundary is copied to one that does (up to ROWS_STACK_FLOATS inputs). */
#define ROWS_STACK_FLOATS 8192
void sm_bsr_rows(int64_t m, int64_t n, int64_t br, int64_t bc, int64_t batch, const int32_t *indptr,
                 const int32_t *cols, const float *values, const float *bias, const float *x, int64_t ldx, float *y,
                 int64_t ldy)
{
    float stack[ROWS_STACK_FLOATS + 16];
    float *copy = stack + ((64 - (uintptr_t)stack % 64) % 64) / sizeof(float);
    for (int64_t b = 0; b < batch; ++b) {
        const float *xr = x + b * ldx;
        float *yr = y + b * ldy;
        if ((uintptr_t)xr % 64 != 0 && n <= ROWS_STACK_FLOATS) { /* cache-line aligned vector loads of the input */
            memcpy(copy, xr, sizeof(float) * (size_t)n);
            xr = copy;
        }
#ifdef SM_VECTORS
        if (bc == 8 && br == 1) {
            rows_1x8(m, n, indptr, cols, values, bias, xr, yr);
            continue;
        } else if (bc == 8 && br == 2) {
            rows_2x8(m, n, indptr, cols, values, bias, xr, yr);
            continue;
        } else if (bc == 8 && br == 4) {
            rows_4x8(m, n, indptr, cols, values, bias, xr, yr);
            continue;
        } else if (bc == 8 && br == 8) {
            rows_8x8(m, n, indptr, cols, values, bias, xr, yr);
            continue;
        }
#endif
        rows_generic(m, n, br, bc, indptr, cols, values, bias, xr, yr);
    }
}

/* out[k][0..63] += sum over the blocks p in [start, end) of sum_c values[p][r0 + k][c] xt[cols[p] bc + c][0..63], for
 * the G block rows r0 .. r0 + G - 1 (G <= 4): each 64-wide scratch row is loaded once for the G rows. With G <= 2,
 * two accumulator sets alternate over the columns (enough independent chains to hide the FMA latency). BC = 0:
 * the block width is bc, known at run time. */
#ifdef SM_VECTORS
#define PANEL_STEP(A, c, G)                                                                                          \
    do {                                                                                                             \
        const float *restrict s_ = s + (c) * PANEL;                                                                  \
        LOAD(s0, s_);                                                                                                \
        LOAD(s1, s_ + 16);                                                                                           \
        LOAD(s2, s_ + 32);                                                                                           \
        LOAD(s3, s_ + 48);                                                                                           \
        for (int k = 0; k < (G); ++k) {                                                                              \
            const float w = block[k * width + (c)];                                                                  \
            A[k][0] += w * s0;                                                                                       \
            A[k][1] += w * s1;                                                                                       \
            A[k][2] += w * s2;                                                                                       \
            A[k][3] += w * s3;                                                                                       \
        }                                                                                                            \
    } while (0)
#define PANEL_GROUP(G, BC)                                                                                           \
    static void panel_group_##G##_##BC(int64_t br, int64_t bc, int64_t r0, int32_t start, int32_t end,               \
                                       const int32_t *restrict cols, const float *restrict values,                   \
                                       const float *restrict xt, float *restrict out)                                \
    {                                                                                                                \
        const int64_t width = (BC) ? (BC) : bc;                                                                      \
        v16f acc[G][4], acc2[G][4], s0, s1, s2, s3;                                                                  \
        for (int k = 0; k < (G); ++k)                                                                                \
            for (int q = 0; q < 4; ++q)                                                                              \
                LOAD(acc[k][q], out + k * PANEL + 16 * q);                                                           \
        memset(acc2, 0, sizeof(acc2));                                                                               \
        for (int32_t p = start; p < end; ++p) {                                                                      \
            const float *restrict block = values + br * width * (int64_t)p + r0 * width;                             \
            const float *restrict s = xt + width * (int64_t)cols[p] * PANEL;                                         \
            int64_t c = 0;                                                                                           \
            if ((G) <= 2)                                                                                            \
                for (; c + 2 <= width; c += 2) {                                                                     \
                    PANEL_STEP(acc, c, G);                                                                           \
                    PANEL_STEP(acc2, c + 1, G);                                                                      \
                }                                                                                                    \
            for (; c < width; ++c)                                                                                   \
                PANEL_STEP(acc, c, G);                                                                               \
        }                                                                                                            \
        for (int k = 0; k < (G); ++k)                                                                                \
            for (int q = 0; q < 4; ++q) {                                                                            \
                const v16f t = acc[k][q] + acc2[k][q];                                                               \
                memcpy(out + k * PANEL + 16 * q, &t, sizeof(t));                                                     \
            }                                                                                                        \
    }
PANEL_GROUP(1, 8)
PANEL_GROUP(2, 8)
PANEL_GROUP(4, 8)
PANEL_GROUP(1, 0)
PANEL_GROUP(2, 0)
PANEL_GROUP(4, 0)
#endif

static void panel_group(int64_t br, int64_t bc, int64_t r0, int64_t g, int32_t start, int32_t end,
                        const int32_t *restrict cols, const float *restrict values, const float *restrict xt,
                        float *restrict out)
{
#ifdef SM_VECTORS
    typedef void (*group_fn)(int64_t, int64_t, int64_t, int32_t, int32_t, const int32_t *, const float *,
                             const float *, float *);
    static const group_fn table[2][3] = {{panel_group_1_8, panel_group_2_8, panel_group_4_8},
                                         {panel_group_1_0, panel_group_2_0, panel_group_4_0}};
    table[bc != 8][g == 1 ? 0 : g == 2 ? 1 : 2](br, bc, r0, start, end, cols, values, xt, out);
#else
    for (int32_t p = start; p < end; ++p) {
        const float *restrict block = values + br * bc * (int64_t)p + r0 * bc;
        const float *restrict s = xt + bc * (int64_t)cols[p] * PANEL;
        for (int64_t c = 0; c < bc; ++c, s += PANEL)
            for (int64_t k = 0; k < g; ++k) {
                const float w = block[k * bc + c];
                for (int l = 0; l < PANEL; ++l)
                    out[k * PANEL + l] += w * s[l];
            }
    }
#endif
}

/* Y = X Mᵀ + b by panels of 64 input rows. Each panel of X is transposed into xt (ceil(n / bc) bc rows of 64
 * lanes, L2-resident) and the products accumulate in yt (one 64-lane row per output row). The blocks are taken in
 * tiles of TILE_COLS columns, all block-rows through one tile before the next, so that the tile's 32 KiB of xt stays
 * in L1 while every block-row reads it: over the whole of xt at once, each 64-byte row load came from L2 (one per
 * multiply-add). The scratch is allocated per call: no state is shared between calling threads. Returns 0, or -1
 * when out of memory. */
#define TILE_COLS 128
int sm_bsr_panels(int64_t m, int64_t n, int64_t br, int64_t bc, int64_t batch, const int32_t *restrict indptr,
                  const int32_t *restrict cols, const float *restrict values, const float *restrict bias,
                  const float *restrict x, int64_t ldx, float *restrict y, int64_t ldy)
{
    const int64_t block_rows = (m + br - 1) / br, nb = (n + bc - 1) / bc, npad = nb * bc;
    const int64_t tile = TILE_COLS / bc > 0 ? TILE_COLS / bc : 1; /* block-columns per tile */
    float *scratch = aligned_alloc(64, sizeof(float) * (size_t)(PANEL * (npad + block_rows * br)));
    int32_t *cursor = malloc(sizeof(int32_t) * (size_t)(block_rows + 1));
    if (scratch == NULL || cursor == NULL) {
        free(scratch);
        free(cursor);
        return -1;
    }
    float *restrict xt = scratch, *restrict yt = scratch + PANEL * npad;
    for (int64_t b0 = 0; b0 < batch; b0 += PANEL) {
        const int64_t width = batch - b0 < PANEL ? batch - b0 : PANEL;
        for (int64_t j0 = 0; j0 < npad; j0 += 16) { /* xt[j][r] = x[b0 + r][j], zero past n and past the batch */
            const int64_t j1 = j0 + 16 < n ? j0 + 16 : n;
            for (int64_t r = 0; r < width; ++r)
                for (int64_t j = j0; j < j1; ++j)
                    xt[j * PANEL + r] = x[(b0 + r) * ldx + j];
            for (int64_t j = j1; j < j0 + 16 && j < npad; ++j)
                memset(xt + j * PANEL, 0, sizeof(float) * PANEL);
            for (int64_t r = width; r < PANEL; ++r)
                for (int64_t j = j0; j < j1; ++j)
                    xt[j * PANEL + r] = 0.0f;
        }
        memset(yt, 0, sizeof(float) * (size_t)(PANEL * block_rows * br));
        memcpy(cursor, indptr, sizeof(int32_t) * (size_t)block_rows);
        for (int64_t t1 = tile; t1 < nb + tile; t1 += tile) { /* the blocks of block-columns [t1 - tile, t1) */
            for (int64_t I = 0; I < block_rows; ++I) {
                const int32_t start = cursor[I];
                int32_t end = start;
                while (end < indptr[I + 1] && cols[end] < t1)
                    ++end;
                if (end == start)
                    continue;
                cursor[I] = end;
                const int64_t here = m - I * br < br ? m - I * br : br;
                for (int64_t r0 = 0, g; r0 < here; r0 += g) {
                    g = here - r0 >= 4 ? 4 : here - r0 >= 2 ? 2 : 1;
                    panel_group(br, bc, r0, g, start, end, cols, values, xt, yt + (I * br + r0) * PANEL);
                }
            }
        }
        for (int64_t i0 = 0; i0 < m; i0 += 16) { /* y[b0 + r][i] = yt[i][r] + bias[i], in 16-row strips */
            const int64_t i1 = i0 + 16 < m ? i0 + 16 : m;
            for (int64_t r = 0; r < width; ++r)
                for (int64_t i = i0; i < i1; ++i)
                    y[(b0 + r) * ldy + i] = yt[i * PANEL + r] + (bias != NULL ? bias[i] : 0.0f);
        }
    }
    free(scratch);
    free(cursor);
    return 0;
}
