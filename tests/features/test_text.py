import pytest

from structmat.features.text import english_sentences, split_sentences


def test_sentences_are_real_distinct_and_seeded():
    first = english_sentences(sources=("licenses",), seed=0, limit=200)
    assert len(first) == 200 and len(set(first)) == 200
    assert all(30 <= len(s) <= 300 for s in first)
    assert first == english_sentences(sources=("licenses",), seed=0, limit=200)
    assert first != english_sentences(sources=("licenses",), seed=1, limit=200)


def test_split_is_disjoint_and_checked():
    sentences = english_sentences(sources=("licenses",), limit=50)
    calibration, held_out = split_sentences(sentences, 30, 20)
    assert not set(calibration) & set(held_out) and len(held_out) == 20
    with pytest.raises(ValueError, match="only 50 available"):
        split_sentences(sentences, 40, 20)
    with pytest.raises(ValueError, match="sources must be"):
        english_sentences(sources=("novels",))
