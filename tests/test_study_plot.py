from structmat.study_plot import plot_study


def _history(values, best):
    return {"best_epoch": best, "history": [{"epoch": i, "val_loss": 1.0 / (i + 1) + 0.01 * v, "val_agreement": v,
                                             "val_accuracy": None} for i, v in enumerate(values)]}


def _head(family, before, after, values=None, status="ok", message="", plain=None):
    return {"family": family, "share": 0.25 if family != "dense" else 1.0, "status": status, "message": message,
            "agreement_before": before, "agreement_after": after, "plain_agreement_before": plain,
            "history": _history(values, len(values) - 1) if values else None}


def test_every_family_is_in_the_figure_and_identical_curves_share_one_entry(tmp_path):
    same = [0.5, 0.8, 0.9]
    study = {"objective": "distill", "budget": 0.25, "test_count": 1000, "config": {"init": "data-aware"},
             "heads": [_head("dense", None, 1.0),
                       _head("lowrank", 0.5, 0.9, same, plain=0.2),
                       _head("hodlr", 0.5, 0.9, same, plain=0.2),
                       _head("hedlr", 0.5, 0.9, same),
                       _head("monarch", 0.6, 0.95, [0.6, 0.9, 0.95]),
                       _head("ldr", 0.45, None, status="too slow", message="one training step of 128 rows took 30 s"),
                       _head("toeplitz_like", None, None, status="fit failed", message="ValueError: budget")]}
    shown = plot_study(study, tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 10_000
    assert [r.split()[0] for r in shown["rows"]] == ["dense", "lowrank", "hodlr", "hedlr", "monarch", "ldr",
                                                     "toeplitz_like"]
    assert "lowrank = hodlr = hedlr (identical)" in shown["curves"] and "monarch" in shown["curves"]
    assert "best epoch (the weights kept)" in shown["curves"]
    assert shown["not_trained"] == ["ldr", "toeplitz_like"]


def test_a_labels_study_draws_the_dense_heads_training_too(tmp_path):
    study = {"objective": "labels", "budget": 0.25, "test_count": 100, "config": {"init": "plain"},
             "heads": [{**_head("dense", None, 0.9, [0.1, 0.9]), "accuracy_after": 0.9},
                       {**_head("sparse", None, None, [0.5, 0.85]), "accuracy_before": 0.5, "accuracy_after": 0.85}]}
    for head in study["heads"]:
        for record in head["history"]["history"]:
            record["val_accuracy"], record["val_agreement"] = record["val_agreement"], None
    shown = plot_study(study, tmp_path / "l.png")
    assert shown["curves"][:2] == ["dense", "sparse"] and shown["not_trained"] == []
