import pytest

from structmat.benchmarks.compress_variants import layer_loss_bound


def _row(name, shape, losses):
    return {"layer": name, "shape": list(shape),
            "points": [{"share": s, "loss": l} for s, l in zip((0.25, 0.5, 0.75), losses)]}


def test_a_sensitive_layer_gets_more_and_the_best_allocation_beats_uniform():
    rows = [_row("a", (10, 10), (0.4, 0.2, 0.1)), _row("b", (10, 10), (0.004, 0.002, 0.001))]
    bound = layer_loss_bound(rows, 0.5)
    assert bound["uniform_predicted_loss"] == pytest.approx(0.202)
    assert bound["best_grid_predicted_loss"] == pytest.approx(0.104)      # a at 0.75, b at 0.25
    assert bound["best_grid_shares"] == {"a": 0.75, "b": 0.25}
    assert bound["best_fine_predicted_loss"] <= bound["best_grid_predicted_loss"]
    assert sum(bound["best_fine_shares"].values()) <= 1.0 + 1e-9          # equal sizes: the shares average ≤ 0.5


def test_equal_layers_gain_nothing_from_reallocation():
    rows = [_row(name, (4, 8), (0.3, 0.1, 0.03)) for name in "abc"]
    bound = layer_loss_bound(rows, 0.5)
    assert bound["best_grid_predicted_loss"] == pytest.approx(bound["uniform_predicted_loss"])
