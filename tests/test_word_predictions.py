"""softmax and per-word labels (aetnet.data.encoding.windows): shared by training evaluation and prediction."""

import math

import numpy as np

from aetnet.data.encoding.windows import softmax, word_predictions


def test_softmax_hand_worked_and_stable():
    np.testing.assert_allclose(softmax(np.array([0.0, math.log(3.0)])), [0.25, 0.75])
    rows = softmax(np.array([[0.0, math.log(3.0)], [1000.0, 1000.0]]))  # per row; no overflow at 1000
    np.testing.assert_allclose(rows, [[0.25, 0.75], [0.5, 0.5]])


def test_word_predictions_label_probability_and_unseen_words():
    merged = [np.array([0.0, math.log(3.0)]), None, np.array([math.log(4.0), 0.0])]
    labels, probs = word_predictions(merged, ["O", "B-KEY"])
    assert labels == ["B-KEY", "O", "O"]
    np.testing.assert_allclose(probs, [0.75, 0.0, 0.8])
    labels, _ = word_predictions(merged, {0: "O", 1: "B-KEY"})  # id2label as a dict
    assert labels == ["B-KEY", "O", "O"]


def test_keep_most_context_hand_worked():
    from aetnet.data.encoding.windows import keep_most_context

    occurrences = [
        (0, 0, 1, 10, [1.0]),  # context min(1, 8) = 1
        (0, 0, 5, 10, [2.0]),  # context min(5, 4) = 4: wins
        (0, 0, 4, 10, [3.0]),  # context 4 again: a tie keeps the first
        (0, 1, 0, 10, [4.0]),  # context 0 still beats "never seen"
        (1, 0, 3, 4, [5.0]),  # context min(3, 0) = 0
    ]
    merged = keep_most_context([3, 1], occurrences)
    assert [None if v is None else v.tolist() for v in merged[0]] == [[2.0], [4.0], None]
    assert merged[1][0].tolist() == [5.0]


def test_link_probability_hand_worked():
    from aetnet.data.documents.relations import link_probability

    assert link_probability(0.0) == 0.5
    assert math.isclose(link_probability(math.log(3.0)), 0.75)  # 1 / (1 + 1/3)
