/* kernel_monarch.c: Monarch matrices (Dao et al., ICML 2022, eq. (1)): y = P_out L P R x with R = diag(R_0 ..
 * R_{K-1}) (blocks (J t, I)), the Monarch permutation (k, j, tau) -> (j, k, tau), L = diag(L_0 .. L_{J-1})
 * (blocks (L_r, K t)), outputs interleaved: y[l J + j] = (L_j v_j)[l]. nparams = t J K (I + L_r) multiply-adds.
 *
 * Layout (writer "monarch" in structmat/speed_c/writers.py): metadata [K, J, t, I, L_r]; arrays R (K, J t, I) and
 * L (J, L_r, K t), float32 row-major as the Monarch class stores them. Inputs are zero-padded to K I and the
 * padded outputs (l J + j >= m) are dropped, as in structmat.matrices.Monarch. The workspace holds the padded
 * input, the K J t intermediate values after R, the same values regrouped by j, and one block's L_r outputs.
 */
#include "structmat_layer.h"

typedef struct monarch_plan {
    int64_t K, J, t, I, Lr;
    float *xpad, *u, *v, *out;
    float *Lt;  /* each L_j transposed, (K t) x L_r: its product combines K t rows of length L_r instead of taking
                 * L_r dot products of length K t, which are short at small ranks (4x slower at K t = 56) */
} monarch_plan;

static void monarch_release(sm_layer *layer)
{
    monarch_plan *plan = layer->plan;
    if (plan != NULL) {
        sm_free(plan->xpad);
        sm_free(plan->u);
        sm_free(plan->v);
        sm_free(plan->out);
        sm_free(plan->Lt);
        sm_free(plan);
    }
    layer->plan = NULL;
}

static int monarch_prepare(sm_layer *layer, sm_error *error)
{
    int64_t K, J, t, I, Lr, KI, LrJ, Jt, Kt, r_size, l_size, ukj;
    monarch_plan *plan;
    if (sm_expect_meta(layer, 5, error) || sm_expect_arrays(layer, 2, error))
        return -1;
    K = layer->meta[0], J = layer->meta[1], t = layer->meta[2], I = layer->meta[3], Lr = layer->meta[4];
    if (K < 1 || J < 1 || t < 1 || I < 1 || Lr < 1)
        return sm_fail(error, "block counts, rank and block sizes must be >= 1");
    if (!sm_mul(K, I, &KI) || !sm_mul(Lr, J, &LrJ) || !sm_mul(J, t, &Jt) || !sm_mul(K, t, &Kt)
        || !sm_mul(K, Jt, &ukj) || !sm_mul(ukj, I, &r_size) || !sm_mul(J, Lr, &l_size) || !sm_mul(l_size, Kt, &l_size))
        return sm_fail(error, "block sizes overflow");
    if (KI < layer->n || KI - I >= layer->n || LrJ < layer->m || LrJ - J >= layer->m)
        return sm_fail(error, "blocks (K=%lld, I=%lld, J=%lld, L_r=%lld) do not fit shape (%lld, %lld)",
                       (long long)K, (long long)I, (long long)J, (long long)Lr, (long long)layer->m,
                       (long long)layer->n);
    if (sm_f32(layer, 0, (uint64_t)r_size, "R", error) == NULL || sm_f32(layer, 1, (uint64_t)l_size, "L", error) == NULL)
        return -1;
    plan = sm_alloc(sizeof(*plan));
    if (plan == NULL)
        return sm_fail(error, "out of memory");
    layer->plan = plan;
    plan->K = K, plan->J = J, plan->t = t, plan->I = I, plan->Lr = Lr;
    plan->xpad = sm_alloc(sizeof(float) * (size_t)KI);
    plan->u = sm_alloc(sizeof(float) * (size_t)ukj);
    plan->v = sm_alloc(sizeof(float) * (size_t)ukj);
    plan->out = sm_alloc(sizeof(float) * (size_t)Lr);
    plan->Lt = sm_alloc(sizeof(float) * (size_t)l_size);
    if (plan->xpad == NULL || plan->u == NULL || plan->v == NULL || plan->out == NULL || plan->Lt == NULL) {
        monarch_release(layer);
        return sm_fail(error, "out of memory");
    }
    {
        const float *L = layer->arrays[1].data;
        for (int64_t j = 0; j < J; ++j)
            for (int64_t l = 0; l < Lr; ++l)
                for (int64_t c = 0; c < Kt; ++c)
                    plan->Lt[(j * Kt + c) * Lr + l] = L[(j * Lr + l) * Kt + c];
    }
    return 0;
}

static void monarch_apply(const sm_layer *layer, const float *x, float *y)
{
    const monarch_plan *p = layer->plan;
    const size_t K = (size_t)p->K, J = (size_t)p->J, t = (size_t)p->t, I = (size_t)p->I, Lr = (size_t)p->Lr;
    const size_t m = (size_t)layer->m, n = (size_t)layer->n;
    const float *R = layer->arrays[0].data;
    for (size_t i = 0; i < n; ++i)
        p->xpad[i] = x[i];
    for (size_t i = n; i < K * I; ++i)
        p->xpad[i] = 0.0f;
    for (size_t k = 0; k < K; ++k)  /* u[k] = R_k x_k, (J t) values */
        sm_gemv(J * t, I, R + k * J * t * I, I, p->xpad + k * I, p->u + k * J * t, 0);
    for (size_t k = 0; k < K; ++k)  /* v[j][k t + tau] = u[k][j t + tau] */
        for (size_t j = 0; j < J; ++j)
            for (size_t tau = 0; tau < t; ++tau)
                p->v[j * K * t + k * t + tau] = p->u[k * J * t + j * t + tau];
    for (size_t j = 0; j < J; ++j) {  /* outputs l J + j = (L_j v_j)[l] */
        for (size_t l = 0; l < Lr; ++l)
            p->out[l] = 0.0f;
        sm_gemv_t(K * t, Lr, p->Lt + j * K * t * Lr, Lr, p->v + j * K * t, p->out);
        for (size_t l = 0; l < Lr && l * J + j < m; ++l)
            y[l * J + j] = p->out[l];
    }
}

const sm_family sm_family_monarch = {9, "monarch", monarch_prepare, monarch_apply, monarch_release};
