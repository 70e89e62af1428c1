"""A batch's logits cut back into one output per window (training evaluation and predict share it)."""

import numpy as np

from aetnet.models.heads import output_names, window_outputs


def test_output_names():
    assert output_names("qa") == ("start_logits", "end_logits")
    assert output_names("token") == output_names("sequence") == output_names("relation") == ("logits",)


def test_window_outputs_per_kind():
    logits = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)  # (B=2, L=4, C=3)
    token = window_outputs("token", {"logits": logits}, [4, 2])
    assert [t.shape for t in token] == [(4, 3), (2, 3)]
    np.testing.assert_array_equal(token[1], [[12, 13, 14], [15, 16, 17]])
    relation = window_outputs("relation", {"logits": logits}, [1, 0])  # lengths count entities here
    assert [r.shape for r in relation] == [(1, 3), (0, 3)]
    classes = np.array([[0.1, 0.9], [0.7, 0.3]])
    sequence = window_outputs("sequence", {"logits": classes}, [4, 2])  # never cut: one row per window
    np.testing.assert_array_equal(np.stack(sequence), classes)
    starts, ends = np.arange(8.0).reshape(2, 4), -np.arange(8.0).reshape(2, 4)
    (s0, e0), (s1, e1) = window_outputs("qa", {"start_logits": starts, "end_logits": ends}, [3, 1])
    np.testing.assert_array_equal(s0, [0, 1, 2])
    np.testing.assert_array_equal(e1, [-4])
