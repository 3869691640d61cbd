/* kernel_toeplitz_like.c: Toeplitz-like matrices y = [1/2 sum_j Z_1(g_j) Z_{-1}(v_j)]_{[:m, :n]} x, v_j = J h_j
 * (Sylvester displacement Z_1 M - M Z_{-1} = G H^T; Sindhwani, Sainath & Kumar, NeurIPS 2015), N = max(m, n).
 * nparams = 2 r N, but the product costs O(r N log N), not O(nparams).
 *
 * Layout (writer "toeplitz_like" in structmat/speed_c/writers.py): metadata [N, r]; float32 arrays G^T (r, N)
 * and V^T = (J H)^T (r, N), row-major: one generator per row.
 *
 * Method (implementation note ldr-sparse-monarch.md section 1.3): with a radix-2 FFT only, an f-circulant
 * product is a linear convolution zero-padded to L = 2^k >= 2N - 1, folded back: Z_f(v) x = c[:N] + f c[N:2N],
 * c = v * x. prepare() stores the half spectra (L/2 + 1 bins) of every g_j (times 1/2) and v_j. apply() takes
 * one FFT of x, then for each pair of generators one inverse FFT (the two skew-circulant products as the real
 * and imaginary parts of one complex signal), one forward FFT (the two folded u_j packed the same way, split by
 * Hermitian symmetry), accumulates sum_j G_j U_j in frequency space, and ends with one inverse FFT:
 * r + 2 complex FFTs of length L per product. The FFT is an iterative radix-2 Cooley-Tukey on split real and
 * imaginary arrays, with each stage's twiddles stored contiguously so that its inner loop vectorizes.
 */
#include <math.h>

#include "structmat_layer.h"

typedef struct toeplitz_like_plan {
    size_t N, r, L, bins;       /* bins = L / 2 + 1 */
    int32_t *bitrev;            /* L entries */
    float *tw_re, *tw_im;       /* stage twiddles: entries [h, 2h) for the stage of half-length h */
    float *g_re, *g_im;         /* r x bins: spectra of g_j / 2 */
    float *v_re, *v_im;         /* r x bins: spectra of v_j */
    float *x_re, *x_im;         /* L: the spectrum of x */
    float *a_re, *a_im;         /* L: work signal */
    float *y_re, *y_im;         /* L: the accumulated output spectrum */
} toeplitz_like_plan;

/* In-place FFT of length p->L: forward (sign -1, no scaling) or inverse (sign +1, scaled by 1/L). */
static void tl_fft(const toeplitz_like_plan *p, float *restrict re, float *restrict im, int inverse)
{
    const size_t L = p->L;
    for (size_t i = 0; i < L; ++i) {
        const size_t j = (size_t)p->bitrev[i];
        if (j > i) {
            float t = re[i];
            re[i] = re[j], re[j] = t;
            t = im[i];
            im[i] = im[j], im[j] = t;
        }
    }
    const float sign = inverse ? 1.0f : -1.0f;
    for (size_t h = 1; h < L; h *= 2) {
        const float *restrict wr = p->tw_re + h, *restrict wi = p->tw_im + h;
        for (size_t start = 0; start < L; start += 2 * h) {
            float *restrict ar = re + start, *restrict ai = im + start;
            float *restrict br = re + start + h, *restrict bi = im + start + h;
            for (size_t k = 0; k < h; ++k) {
                const float cr = wr[k], ci = sign * wi[k];
                const float tr = br[k] * cr - bi[k] * ci, ti = br[k] * ci + bi[k] * cr;
                br[k] = ar[k] - tr, bi[k] = ai[k] - ti;
                ar[k] += tr, ai[k] += ti;
            }
        }
    }
    if (inverse) {
        const float scale = 1.0f / (float)L;
        for (size_t i = 0; i < L; ++i)
            re[i] *= scale, im[i] *= scale;
    }
}

/* Half spectrum (bins) of a real vector of length N zero-padded to L, times `scale`. */
static void tl_spectrum(toeplitz_like_plan *p, const float *vector, float scale, float *out_re, float *out_im)
{
    for (size_t i = 0; i < p->L; ++i)
        p->a_re[i] = i < p->N ? vector[i] : 0.0f, p->a_im[i] = 0.0f;
    tl_fft(p, p->a_re, p->a_im, 0);
    for (size_t k = 0; k < p->bins; ++k)
        out_re[k] = scale * p->a_re[k], out_im[k] = scale * p->a_im[k];
}

static void toeplitz_like_release(sm_layer *layer)
{
    toeplitz_like_plan *p = layer->plan;
    if (p != NULL) {
        sm_free(p->bitrev);
        sm_free(p->tw_re), sm_free(p->tw_im);
        sm_free(p->g_re), sm_free(p->g_im), sm_free(p->v_re), sm_free(p->v_im);
        sm_free(p->x_re), sm_free(p->x_im), sm_free(p->a_re), sm_free(p->a_im);
        sm_free(p->y_re), sm_free(p->y_im);
        sm_free(p);
    }
    layer->plan = NULL;
}

static int toeplitz_like_prepare(sm_layer *layer, sm_error *error)
{
    int64_t N, r, size, spectra;
    size_t L = 1, log2L = 0;
    const float *gt, *vt;
    toeplitz_like_plan *p;
    if (sm_expect_meta(layer, 2, error) || sm_expect_arrays(layer, 2, error))
        return -1;
    N = layer->meta[0], r = layer->meta[1];
    if (N != (layer->m > layer->n ? layer->m : layer->n))
        return sm_fail(error, "N must be max(m, n) = %lld; the file says %lld",
                       (long long)(layer->m > layer->n ? layer->m : layer->n), (long long)N);
    if (r < 1 || r > N)
        return sm_fail(error, "rank must be in [1, N=%lld]; the file says %lld", (long long)N, (long long)r);
    if (N > ((int64_t)1 << 28))
        return sm_fail(error, "N=%lld is too large for the int32 FFT tables", (long long)N);
    if (!sm_mul(r, N, &size))
        return sm_fail(error, "rank %lld overflows the array sizes", (long long)r);
    gt = sm_f32(layer, 0, (uint64_t)size, "G^T", error);
    vt = gt == NULL ? NULL : sm_f32(layer, 1, (uint64_t)size, "(J H)^T", error);
    if (vt == NULL)
        return -1;
    while (L < (size_t)(2 * N - 1) || L < 2)
        L *= 2, ++log2L;
    p = sm_alloc(sizeof(*p));
    if (p == NULL)
        return sm_fail(error, "out of memory");
    layer->plan = p;
    p->N = (size_t)N, p->r = (size_t)r, p->L = L, p->bins = L / 2 + 1;
    if (!sm_mul(r, (int64_t)p->bins, &spectra)) {
        toeplitz_like_release(layer);
        return sm_fail(error, "rank %lld overflows the spectra", (long long)r);
    }
    p->bitrev = sm_alloc(sizeof(int32_t) * L);
    p->tw_re = sm_alloc(sizeof(float) * L), p->tw_im = sm_alloc(sizeof(float) * L);
    p->g_re = sm_alloc(sizeof(float) * (size_t)spectra), p->g_im = sm_alloc(sizeof(float) * (size_t)spectra);
    p->v_re = sm_alloc(sizeof(float) * (size_t)spectra), p->v_im = sm_alloc(sizeof(float) * (size_t)spectra);
    p->x_re = sm_alloc(sizeof(float) * L), p->x_im = sm_alloc(sizeof(float) * L);
    p->a_re = sm_alloc(sizeof(float) * L), p->a_im = sm_alloc(sizeof(float) * L);
    p->y_re = sm_alloc(sizeof(float) * L), p->y_im = sm_alloc(sizeof(float) * L);
    if (p->bitrev == NULL || p->tw_re == NULL || p->tw_im == NULL || p->g_re == NULL || p->g_im == NULL
        || p->v_re == NULL || p->v_im == NULL || p->x_re == NULL || p->x_im == NULL || p->a_re == NULL
        || p->a_im == NULL || p->y_re == NULL || p->y_im == NULL) {
        toeplitz_like_release(layer);
        return sm_fail(error, "out of memory for N=%lld, r=%lld", (long long)N, (long long)r);
    }
    for (size_t i = 0; i < L; ++i) {
        size_t reversed = 0;
        for (size_t b = 0; b < log2L; ++b)
            reversed |= ((i >> b) & 1u) << (log2L - 1 - b);
        p->bitrev[i] = (int32_t)reversed;
    }
    for (size_t h = 1; h < L; h *= 2)
        for (size_t k = 0; k < h; ++k) { /* e^{i pi k / h}, computed in double */
            const double angle = 3.14159265358979323846 * (double)k / (double)h;
            p->tw_re[h + k] = (float)cos(angle), p->tw_im[h + k] = (float)sin(angle);
        }
    for (size_t j = 0; j < p->r; ++j) {
        tl_spectrum(p, gt + j * p->N, 0.5f, p->g_re + j * p->bins, p->g_im + j * p->bins);
        tl_spectrum(p, vt + j * p->N, 1.0f, p->v_re + j * p->bins, p->v_im + j * p->bins);
    }
    return 0;
}

static void toeplitz_like_apply(const sm_layer *layer, const float *x, float *y)
{
    const toeplitz_like_plan *p = layer->plan;
    const size_t N = p->N, L = p->L, bins = p->bins, n = (size_t)layer->n, m = (size_t)layer->m;
    float *restrict xr = p->x_re, *restrict xi = p->x_im, *restrict ar = p->a_re, *restrict ai = p->a_im;
    float *restrict yr = p->y_re, *restrict yi = p->y_im;
    for (size_t i = 0; i < L; ++i)
        xr[i] = i < n ? x[i] : 0.0f, xi[i] = 0.0f;
    tl_fft(p, xr, xi, 0);
    for (size_t k = 0; k < bins; ++k)
        yr[k] = 0.0f, yi[k] = 0.0f;
    for (size_t j = 0; j < p->r; j += 2) {
        const int pair = j + 1 < p->r;
        const float *v1r = p->v_re + j * bins, *v1i = p->v_im + j * bins;
        const float *v2r = pair ? v1r + bins : NULL, *v2i = pair ? v1i + bins : NULL;
        /* stage 1: spectra of c_j = v_j * x and c_{j+1}, packed as c_j + i c_{j+1} */
        for (size_t k = 0; k < bins; ++k) {
            const float c1r = v1r[k] * xr[k] - v1i[k] * xi[k], c1i = v1r[k] * xi[k] + v1i[k] * xr[k];
            const float c2r = pair ? v2r[k] * xr[k] - v2i[k] * xi[k] : 0.0f;
            const float c2i = pair ? v2r[k] * xi[k] + v2i[k] * xr[k] : 0.0f;
            ar[k] = c1r - c2i, ai[k] = c1i + c2r;
            if (k > 0 && k < L - k)
                ar[L - k] = c1r + c2i, ai[L - k] = c2r - c1i;
        }
        tl_fft(p, ar, ai, 1);
        /* fold the negacyclic wrap: u = c[:N] - c[N:2N], for both, and pack u_j + i u_{j+1} zero-padded */
        for (size_t t = 0; t < N; ++t)
            ar[t] -= ar[t + N], ai[t] -= ai[t + N];
        for (size_t t = N; t < L; ++t)
            ar[t] = 0.0f, ai[t] = 0.0f;
        tl_fft(p, ar, ai, 0);
        /* stage 2: split the two spectra by Hermitian symmetry and accumulate (g_j / 2) u_j in frequency space */
        const float *g1r = p->g_re + j * bins, *g1i = p->g_im + j * bins;
        const float *g2r = pair ? g1r + bins : NULL, *g2i = pair ? g1i + bins : NULL;
        for (size_t k = 0; k < bins; ++k) {
            const size_t q = k == 0 ? 0 : L - k;
            const float u1r = 0.5f * (ar[k] + ar[q]), u1i = 0.5f * (ai[k] - ai[q]);
            const float u2r = 0.5f * (ai[k] + ai[q]), u2i = 0.5f * (ar[q] - ar[k]);
            yr[k] += g1r[k] * u1r - g1i[k] * u1i, yi[k] += g1r[k] * u1i + g1i[k] * u1r;
            if (pair)
                yr[k] += g2r[k] * u2r - g2i[k] * u2i, yi[k] += g2r[k] * u2i + g2i[k] * u2r;
        }
    }
    /* the full Hermitian spectrum, one inverse FFT, fold the cyclic wrap: y = d[:N] + d[N:2N] */
    for (size_t k = 1; k < L - k; ++k)
        yr[L - k] = yr[k], yi[L - k] = -yi[k];
    tl_fft(p, yr, yi, 1);
    for (size_t i = 0; i < m; ++i)
        y[i] = yr[i] + yr[i + N];
}

const sm_family sm_family_toeplitz_like = {10, "toeplitz_like", toeplitz_like_prepare, toeplitz_like_apply,
                                           toeplitz_like_release};
