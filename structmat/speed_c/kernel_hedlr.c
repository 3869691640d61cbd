/* kernel_hedlr.c: HEDLR (block low-rank) matrices (family "hedlr") run the hierarchical-matrix kernel of
 * kernel_hmatrix.c, whose comment gives the product and the layout (writer _hmatrix_layout in
 * structmat/speed_c/writers.py); a HEDLR grid is one particular leaf table. */
#include "structmat_layer.h"

int hmatrix_prepare(sm_layer *layer, sm_error *error);
void hmatrix_apply(const sm_layer *layer, const float *x, float *y);
void hmatrix_release(sm_layer *layer);

const sm_family sm_family_hedlr = {5, "hedlr", hmatrix_prepare, hmatrix_apply, hmatrix_release};
