import pytest
import torch

from structmat.training.sampling import PairSampler, num_pairs, sample_pairs, sampled_matmul


def test_num_pairs_formula():
    assert num_pairs(100, 0.5) == 50
    assert num_pairs(100, 0.505) == 51  # ceil
    assert num_pairs(10, 0.3) == 3  # 0.3 * 10 is 3.0000000000000004 in floating point
    assert num_pairs(100, 0.01, minimal_k=10) == 10
    assert num_pairs(7, 0.5, minimal_k=20) == 7
    assert num_pairs(7, 1.0) == 7


@pytest.mark.parametrize("bad, error", [(0.0, ValueError), (1.5, ValueError), (True, TypeError), ("0.5", TypeError)])
def test_sampler_rejects_bad_ratio(bad, error):
    with pytest.raises(error, match="sample_ratio"):
        PairSampler(bad)


def test_sampler_rejects_bad_scheme_and_minimal_k():
    with pytest.raises(ValueError, match="scheme must be one of"):
        PairSampler(0.5, scheme="uniform")
    with pytest.raises(ValueError, match="minimal_k"):
        PairSampler(0.5, minimal_k=0)


def test_exact_sampler_returns_the_product():
    A, B = torch.randn(6, 9), torch.randn(9, 4)
    C, used = sampled_matmul(A, B, PairSampler(1.0))
    assert torch.equal(C, A @ B) and used == 9


def test_topk_is_deterministic_and_keeps_the_largest_pairs():
    gen = torch.Generator().manual_seed(0)
    A, B = torch.randn(6, 10, generator=gen), torch.randn(10, 4, generator=gen)
    A[:, 3] *= 100  # pair 3 dominates
    C1, used = sampled_matmul(A, B, PairSampler(0.3, scheme="topk"))
    C2, _ = sampled_matmul(A, B, PairSampler(0.3, scheme="topk"))
    assert used == 3 and torch.equal(C1, C2)
    scores = A.norm(dim=0) * B.norm(dim=1)
    indices, scale = sample_pairs(scores, 3, "topk")
    assert scale is None and 3 in indices.tolist()
    assert set(indices.tolist()) == set(torch.topk(scores, 3).indices.tolist())


def test_bernoulli_probabilities_sum_to_k_and_are_capped_at_one():
    # concentrated scores: clamping k*q at 1 without refilling would keep far fewer than k pairs
    scores = torch.cat([torch.full((5,), 100.0), torch.ones(95)]).double()
    gen = torch.Generator().manual_seed(1)
    counts = [sample_pairs(scores, 40, "bernoulli", generator=gen)[0].numel() for _ in range(400)]
    assert abs(sum(counts) / len(counts) - 40) < 1.0
    indices, scale = sample_pairs(scores, 40, "bernoulli", generator=gen)
    assert set(range(5)) <= set(indices.tolist())  # probability one
    assert torch.all(scale[:5] == 1.0)


def test_zero_scores_give_the_exact_product():
    assert sample_pairs(torch.zeros(10), 3, "crs") is None
    assert sample_pairs(torch.zeros(10), 3, "bernoulli") is None


def _mean_and_stderr(A, B, sampler, draws, seed):
    gen = torch.Generator().manual_seed(seed)
    samples = torch.stack([sampled_matmul(A, B, sampler, gen)[0] for _ in range(draws)])
    return samples.mean(0), samples.std(0) / draws ** 0.5


@pytest.mark.parametrize("scheme", ["crs", "bernoulli"])
def test_randomised_schemes_are_unbiased(scheme):
    """The mean of 3000 sampled products is within 5 standard errors of A @ B in every entry."""
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(5, 12, generator=gen, dtype=torch.float64) * torch.rand(12, generator=gen, dtype=torch.float64)
    B = torch.randn(12, 4, generator=gen, dtype=torch.float64)
    mean, stderr = _mean_and_stderr(A, B, PairSampler(0.25, scheme=scheme), 3000, seed=1)
    z = (mean - A @ B).abs() / stderr
    assert z.max() < 5.0


def test_the_unbiasedness_check_detects_a_biased_estimator():
    """Top-k (unscaled, deterministic) is biased: the same check fails for it, so it is not vacuous."""
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(5, 12, generator=gen, dtype=torch.float64)
    B = torch.randn(12, 4, generator=gen, dtype=torch.float64)
    C, _ = sampled_matmul(A, B, PairSampler(0.25, scheme="topk"))
    # a CRS estimate without its 1/(k p) scale is biased too
    mean, stderr = _mean_and_stderr(A, B, PairSampler(0.25, scheme="crs"), 3000, seed=1)
    assert (C - A @ B).abs().max() > 0.1
    gen = torch.Generator().manual_seed(1)
    scores = A.norm(dim=0) * B.norm(dim=1)
    unscaled = torch.stack([A[:, i] @ B[i] for i, _ in [sample_pairs(scores, 3, "crs", generator=gen)
                                                          for _ in range(3000)]])
    z = (unscaled.mean(0) - A @ B).abs() / stderr
    assert z.max() > 5.0


def test_same_generator_seed_gives_same_sample():
    scores = torch.rand(50, generator=torch.Generator().manual_seed(3))
    a = sample_pairs(scores, 10, "crs", generator=torch.Generator().manual_seed(7))
    b = sample_pairs(scores, 10, "crs", generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
