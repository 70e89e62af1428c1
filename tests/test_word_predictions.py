"""softmax and per-word labels (aetnet.data.encoding): shared by training evaluation and prediction."""

import math

import numpy as np

from aetnet.data.encoding import softmax, word_predictions


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
