"""Answer location among OCR words and the ANLS metric, against hand-worked cases."""

from __future__ import annotations

import pytest

from aetnet.data.documents.answers import anls, exact_match, locate_answer, mean_anls, normalize_answer

WORDS = ["Gifts", "made", "to", "VANDERBILT", "UNIVERSITY", "constitute", "a", "deduction", "of",
         "$5,000", "."]


def test_normalize_answer():
    assert normalize_answer("  The  U.S.A.!  ") == "the usa"
    assert normalize_answer("“Quoted” — text") == "quoted text"
    assert normalize_answer("") == ""


def test_exact_word_sequence():
    assert locate_answer(WORDS, ["VANDERBILT UNIVERSITY"]) == (3, 4)
    assert locate_answer(WORDS, ["a"]) == (6, 6)


def test_first_answer_that_matches_exactly_wins_over_normalised():
    # The first answer only matches after normalisation; the second matches verbatim.
    assert locate_answer(WORDS, ["vanderbilt university", "deduction"]) == (7, 7)


def test_case_and_punctuation_differences():
    assert locate_answer(WORDS, ["Vanderbilt University"]) == (3, 4)
    assert locate_answer(WORDS, ["5000"]) == (9, 9)
    assert locate_answer(WORDS, ["university constitute."]) == (4, 5)


def test_ocr_split_word_found_by_compact_match():
    words = ["Total", "5,", "000", "paid"]
    assert locate_answer(words, ["5,000"]) == (1, 2)


def test_ocr_typo_found_fuzzily():
    words = ["The", "Nutrition", "Foundatlon", ",", "Inc", "New", "York"]
    # "nutrition foundatlon" vs "nutrition foundation": one substitution in 20 characters.
    assert locate_answer(words, ["Nutrition Foundation"], fuzzy_threshold=0.8) == (1, 2)
    assert locate_answer(words, ["Nutrition Foundation"], fuzzy_threshold=1.01) is None


def test_absent_answer():
    assert locate_answer(WORDS, ["Harvard College of Medicine"]) is None
    assert locate_answer(WORDS, []) is None
    assert locate_answer([], ["x"]) is None
    assert locate_answer(WORDS, ["   "]) is None


def test_anls_hand_worked():
    # "hello" vs "helo": one deletion over max length 5 -> NL 0.2 -> 0.8.
    assert anls("hello", ["helo"]) == pytest.approx(0.8)
    # Case and outer spaces do not count.
    assert anls("  HELLO ", ["hello"]) == pytest.approx(1.0)
    # "abc" vs "xyz": NL 1.0 >= 0.5 -> 0.
    assert anls("abc", ["xyz"]) == 0.0
    # "abcd" vs "abxy": NL 2/4 = 0.5, at the threshold -> 0.
    assert anls("abcd", ["abxy"]) == 0.0
    # "abcd" vs "abcx": NL 0.25 -> 0.75; max over golds picks it over the 0 of "zzzz".
    assert anls("abcd", ["zzzz", "abcx"]) == pytest.approx(0.75)
    assert anls("abc", []) == 0.0


def test_mean_anls_and_exact_match():
    preds = ["hello", "abc", "Vanderbilt University"]
    golds = [["helo"], ["xyz"], ["VANDERBILT UNIVERSITY"]]
    assert mean_anls(preds, golds) == pytest.approx((0.8 + 0.0 + 1.0) / 3)
    assert mean_anls([], []) == 0.0
    with pytest.raises(ValueError):
        mean_anls(["a"], [])
    assert exact_match("Vanderbilt, University!", ["vanderbilt university"]) == 1.0
    assert exact_match("Vanderbilt", ["vanderbilt university"]) == 0.0
