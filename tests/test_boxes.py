"""Box unions (aetnet.data.documents.boxes): one helper serves entities, segments, answers and OCR lines."""

import numpy as np
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


def _grid_by_hand(box, width, height):
    """The 0-1000 grid of one box, written from the LayoutLMv3 reference preprocessing (int(1000 * x / size),
    truncated), with aetnet's documented clipping: past 1023 the box is clipped to 0-1000, then at 0."""
    grid = [int(1000 * box[0] / width), int(1000 * box[1] / height), int(1000 * box[2] / width),
            int(1000 * box[3] / height)]
    if max(grid) > 1023:
        grid = [min(v, 1000) for v in grid]
    return [max(v, 0) for v in grid]


def test_document_boxes_equal_the_reference_formula_box_by_box():
    # document_boxes converts a page's boxes as one array: every box must come out as the per-box formula gives,
    # on pages of odd sizes, fractional and integer pixels, boxes overhanging each edge within the 5 % margin
    from aetnet.data.documents.boxes import document_boxes
    from aetnet.data.documents.document import Document

    rng = np.random.default_rng(7)
    for trial in range(300):
        width, height = int(rng.integers(1, 2500)), int(rng.integers(1, 2500))
        start = rng.uniform(-0.049, 1.0, (40, 2)) * [width, height]
        end = np.minimum(start + rng.uniform(0, 0.4, (40, 2)) * [width, height], [1.049 * width, 1.049 * height])
        boxes = np.concatenate([start, end], axis=1)
        if trial % 2:
            boxes = np.trunc(boxes)
        doc = Document(id="p", words=["w"] * len(boxes), boxes=boxes.tolist(), page_size=(width, height))
        expected = [_grid_by_hand(b, width, height) for b in boxes.tolist()]
        assert document_boxes(doc, "word") == expected
        assert document_boxes(doc, "word", as_array=True).tolist() == expected
    # hand-worked: a 864-pixel page's y = 867 is 1003 (fed as is); a box reaching 1030 on the grid is clipped
    doc = Document(id="p", words=["a", "b"], boxes=[[0, 10, 50, 867], [-3, 0, 1030, 5]], page_size=(1000, 864))
    assert document_boxes(doc, "word") == [[0, 11, 50, 1003], [0, 0, 1000, 5]]


def test_document_boxes_name_the_first_bad_box():
    from aetnet.data.documents.boxes import document_boxes
    from aetnet.data.documents.document import Document
    from aetnet.errors import DataError

    boxes = [[0, 0, 10, 10], [5, 5, 4, 9], [0, 0, 5000, 10]]
    doc = Document(id="p", words=["a", "b", "c"], boxes=boxes, page_size=(100, 100), source="page.json")
    with pytest.raises(DataError, match=r"box 1 \[5.0, 5.0, 4.0, 9.0\] is inverted") as err:
        document_boxes(doc, "word", as_array=True)
    assert "page.json" in str(err.value)
    doc = Document(id="p", words=["a", "b"], boxes=boxes[::2], page_size=(100, 100))
    with pytest.raises(DataError, match="box 1 .* lies outside the 100x100 page"):
        document_boxes(doc, "word")
    doc = Document(id="p", words=["a"], boxes=[[0, 0, float("nan"), 10]], page_size=(100, 100))
    with pytest.raises(ValueError):  # as int(nan) always did: a non-number is never fed as a coordinate
        document_boxes(doc, "word")
