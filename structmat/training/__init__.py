"""Training-time approximate layers (imports torch): drop-ins for ``nn.Linear`` / ``nn.Conv2d`` that cut the cost of
the products inside training rather than fitting a fixed structure to a trained weight.

- Column-row sampled products (Adelman et al., NeurIPS 2021): :class:`SampledLinear`, :class:`SampledConv2d`.
- SWAT, top-K sparse weights and activations (Raihan & Aamodt, NeurIPS 2020): :class:`TopKSparseLinear`,
  :class:`TopKSparseConv2d`.
- StrassenNets sum-product layers with a multiplication budget (Tschannen et al., ICML 2018):
  :class:`SumProductLinear`, :class:`SumProductConv2d`, and the staged schedule in :mod:`.schedule`.

Whole models are converted with :func:`convert_to_sampled`, :func:`convert_to_topk_sparse` and
:func:`convert_to_sum_product`, and described by :func:`training_report`.
"""

from structmat.training.allocation import allocate_densities, erk_densities
from structmat.training.convert import (TrainingLayerReport, convert_to_sampled, convert_to_sum_product,
                                        convert_to_topk_sparse, format_training_report, training_report)
from structmat.training.cost import TrainingCost, model_training_cost
from structmat.training.loop import accuracy, train_epochs
from structmat.training.sampled import SampledConv2d, SampledLinear
from structmat.training.sampling import PairSampler, num_pairs, sample_pairs, sampled_matmul
from structmat.training.schedule import Stage, distillation_loss, set_sum_product_stage, train_staged
from structmat.training.sum_product import (STAGES, SumProductConv2d, SumProductFactors, SumProductLinear,
                                            ternarize)
from structmat.training.topk_sparse import TopKSparseConv2d, TopKSparseLinear

__all__ = [
    "SampledLinear", "SampledConv2d", "PairSampler", "num_pairs", "sample_pairs", "sampled_matmul",
    "TopKSparseLinear", "TopKSparseConv2d", "allocate_densities", "erk_densities",
    "SumProductLinear", "SumProductConv2d", "SumProductFactors", "STAGES", "ternarize",
    "Stage", "set_sum_product_stage", "distillation_loss", "train_staged",
    "convert_to_sampled", "convert_to_topk_sparse", "convert_to_sum_product", "training_report",
    "format_training_report", "TrainingLayerReport", "TrainingCost", "model_training_cost",
    "train_epochs", "accuracy",
]
