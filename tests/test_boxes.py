"""Box unions (aetnet.data.documents.boxes): one helper serves entities, segments, answers and OCR lines."""

import pytest

from aetnet.data.documents.boxes import line_segments, union_box, union_boxes


def test_union_box_hand_worked():
    assert union_box([[10, 20, 30, 40]]) == [10, 20, 30, 40]
    assert union_box([[10, 20, 30, 40], [5, 25, 28, 60], [12, 18, 35, 39]]) == [5, 18, 35, 60]
    with pytest.raises(ValueError):
        union_box([])


def test_union_boxes_per_segment_skips_negative_ids():
    boxes = [[0, 0, 10, 10], [20, 5, 30, 12], [100, 100, 110, 110], [50, 50, 60, 60], [1, 1, 2, 2]]
    segments = [3, 3, -1, 7, 3]
    assert union_boxes(boxes, segments) == {3: [0, 0, 30, 12], 7: [50, 50, 60, 60]}


def test_line_segments_boxes_are_the_unions_of_their_words():
    # two words side by side on one line, a wide gap, then a word; a second line below
    boxes = [[0, 0, 10, 10], [12, 1, 22, 11], [200, 0, 210, 10], [0, 40, 10, 50]]
    ids, seg_boxes = line_segments(boxes)
    assert ids == [0, 0, 1, 2]
    assert seg_boxes == {0: [0, 0, 22, 11], 1: [200, 0, 210, 10], 2: [0, 40, 10, 50]}
