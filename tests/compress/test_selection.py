import re

import pytest
import torch
from torch import nn

from structmat.compress.selection import candidate_layers, module_selector, select_layers, structured_layers
from structmat.layers import replace_linear


def names(chosen):
    return [name for name, _ in chosen]


def test_candidates_are_linears_and_pointwise_convs(tiny_convnet):
    assert names(candidate_layers(tiny_convnet)) == ["expand", "project", "fc"]  # the 3x3 stem is not a matrix


def test_glob_matches_the_whole_name(tiny_transformer):
    assert names(select_layers(tiny_transformer, "blocks.0.*")) == [
        f"blocks.0.{n}" for n in ("query", "key", "value", "output", "intermediate", "out")]
    assert names(select_layers(tiny_transformer, "*.query")) == ["blocks.0.query", "blocks.1.query"]
    assert names(select_layers(tiny_transformer, "pooler")) == ["pooler"]


def test_list_regex_and_callable(tiny_transformer):
    assert names(select_layers(tiny_transformer, ["*.query", "pooler"])) == ["blocks.0.query", "blocks.1.query",
                                                                             "pooler"]
    assert names(select_layers(tiny_transformer, re.compile(r"blocks\.1\.(key|value)$"))) == [
        "blocks.1.key", "blocks.1.value"]
    chosen = select_layers(tiny_transformer, lambda name, module: module.out_features == 48)
    assert names(chosen) == ["blocks.0.intermediate", "blocks.1.intermediate"]


def test_a_rule_that_selects_nothing_lists_candidates_and_hints_at_globs(tiny_transformer):
    with pytest.raises(ValueError, match=r"selects none of the 13 candidate layers.*blocks\.0\.query.*'\*query\*'"):
        select_layers(tiny_transformer, "query")
    with pytest.raises(TypeError, match="compiled regex"):
        module_selector(3)
    with pytest.raises(TypeError, match="glob strings"):
        module_selector(["*.query", 3])


def test_already_structured_layers_are_named(tiny_convnet):
    model = replace_linear(tiny_convnet, "lowrank", 0.5, where="fc")
    assert names(structured_layers(model)) == ["fc"]
    with pytest.raises(ValueError, match="already structured: fc"):
        select_layers(model, "fc")


def test_subclass_of_linear_is_not_a_candidate():
    class Odd(nn.Linear):
        def forward(self, x):
            return super().forward(x) * 2

    model = nn.Sequential(Odd(3, 4), nn.Linear(4, 2))
    assert names(candidate_layers(model)) == ["1"]
    with pytest.raises(TypeError, match="nn.Module"):
        select_layers(torch.zeros(3))


def test_replace_linear_takes_lists_and_regexes_and_reports_long_names(tiny_transformer):
    from structmat.layers import format_report, replacement_report

    model = replace_linear(tiny_transformer, "lowrank", 0.5, where=["*.query"])
    assert [n for n, _ in structured_layers(model)] == ["blocks.0.query", "blocks.1.query"]
    model = replace_linear(tiny_transformer, "lowrank", 0.5, where=re.compile(r"\.(key|value)$"))
    assert len(structured_layers(model)) == 4
    with pytest.raises(ValueError, match="already structured"):
        replace_linear(model, "lowrank", 0.5, where="*.key")
    rows = replacement_report(model)
    long = rows[0].__class__("a.really.long.layer.name.of.forty.characters", "lowrank", 4, 4, 16, 8, 0.1)
    lines = format_report([long, *rows]).splitlines()
    assert lines[1].index(" lowrank") == lines[2].index(" lowrank")
