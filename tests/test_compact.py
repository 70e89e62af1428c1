"""Compact documents (aetnet.data.documents.compact): the arrays read exactly like the lists and dicts they replace,
and a training run keeps one image reference per page instead of the Documents."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from PIL import Image

from aetnet.data.documents.compact import BoxArray, SegmentBoxes
from aetnet.data.documents.document import Document, PageImage, page_images
from aetnet.data.encoding.windows import WindowDataset
from aetnet.errors import DataError


def _doc(**kw) -> Document:
    base = dict(id="d", words=["a", "b", "c"], boxes=[[1, 2, 3, 4], (5.5, 6, 7, 8), np.array([9, 10, 11, 12])],
                page_size=(100, 50), labels=["B-X", "I-X", "O"], segment_ids=[0, 0, -1],
                segment_boxes={0: [1, 2, 7, 8]})
    return Document(**{**base, **kw})


def test_boxes_read_as_float_lists_and_compare_with_lists():
    doc = _doc()
    assert isinstance(doc.boxes, BoxArray)
    assert doc.boxes[1] == [5.5, 6.0, 7.0, 8.0] and type(doc.boxes[1][0]) is float
    assert doc.boxes[-1] == [9.0, 10.0, 11.0, 12.0]
    assert list(doc.boxes) == [[1.0, 2.0, 3.0, 4.0], [5.5, 6.0, 7.0, 8.0], [9.0, 10.0, 11.0, 12.0]]
    assert doc.boxes == [[1, 2, 3, 4], [5.5, 6, 7, 8], [9, 10, 11, 12]]
    assert doc.boxes != [[1, 2, 3, 4]] and doc.boxes != [1, 2, 3, 4] and doc.boxes != []
    assert doc.boxes[1:] == [[5.5, 6, 7, 8], [9, 10, 11, 12]] and isinstance(doc.boxes[1:], BoxArray)
    for x0, y0, x1, y1 in doc.boxes[:1]:
        assert (x0, y0, x1, y1) == (1.0, 2.0, 3.0, 4.0)
    assert np.asarray(doc.boxes).shape == (3, 4) and np.asarray(doc.boxes, dtype=np.int64)[2, 3] == 12
    assert json.loads(json.dumps(doc.boxes.tolist()))[1] == [5.5, 6.0, 7.0, 8.0]
    with pytest.raises(ValueError):  # read-only: a box cannot change behind the encoding's back
        doc.boxes.array[0, 0] = 3.0



def test_np_array_of_the_boxes_is_the_callers_own_copy():
    """``np.array(doc.boxes)`` gives a new writable array, as it did for a list of boxes: scaling it in place
    works and leaves the document's boxes as they were."""
    doc = _doc()
    scaled = np.array(doc.boxes)
    scaled *= 2  # raised "output array is read-only" when np.array handed back the document's own rows
    assert scaled[1].tolist() == [11.0, 12.0, 14.0, 16.0]
    assert doc.boxes[1] == [5.5, 6.0, 7.0, 8.0]
    ints = np.array(doc.boxes, dtype=np.int64)
    ints[0, 0] = 7
    assert ints.tolist() == [[7, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]] and doc.boxes[0] == [1.0, 2.0, 3.0, 4.0]
    assert not np.asarray(doc.boxes).flags.writeable  # no copy asked: the read-only rows themselves

def test_fractional_coordinates_are_kept_exactly():
    x = 123.456789012345
    doc = _doc(words=["a"], boxes=[[x, 1 / 3, x + 1e-9, 2 / 3]], labels=None, segment_ids=None, segment_boxes={})
    assert doc.boxes[0] == [x, 1 / 3, x + 1e-9, 2 / 3]


def test_bad_box_still_names_the_box_the_document_and_the_field():
    with pytest.raises(DataError) as err:
        _doc(boxes=[[1, 2, 3, 4], [1, 2, 3], [0, 0, 1, 1]], source="form.json")
    assert "box 1 of document 'd' has 3 numbers" in str(err.value) and "form.json" in str(err.value)


def test_segment_boxes_read_as_the_dict_they_replace():
    seg = _doc(segment_boxes={7: [1, 2, 3, 4], 2: (5, 6, 7, 8)}).segment_boxes
    assert isinstance(seg, SegmentBoxes)
    assert seg == {2: [5.0, 6.0, 7.0, 8.0], 7: [1.0, 2.0, 3.0, 4.0]}
    assert list(seg) == [2, 7] and len(seg) == 2
    assert seg[7] == [1.0, 2.0, 3.0, 4.0] and seg.get(3) is None and seg.get(-1, "x") == "x"
    assert 2 in seg and np.int64(7) in seg and 3 not in seg and "2" not in seg
    assert sorted(seg.items()) == [(2, [5.0, 6.0, 7.0, 8.0]), (7, [1.0, 2.0, 3.0, 4.0])]
    with pytest.raises(KeyError):
        seg[5]
    assert SegmentBoxes() == {}


def test_labels_share_one_string_per_name():
    docs = [_doc(labels=["B-" + "X", "I-X", "O"]), _doc(labels=["".join(["B-", "X"]), "O", "O"])]
    assert docs[0].labels == ["B-X", "I-X", "O"]
    assert docs[0].labels[0] is docs[1].labels[0] and docs[0].labels[2] is docs[1].labels[1]


def test_documents_pickle_for_worker_processes():
    doc = _doc()
    back = pickle.loads(pickle.dumps(doc))
    assert back.boxes == doc.boxes and back.segment_boxes == doc.segment_boxes and back.labels == doc.labels


def test_page_images_load_the_same_pixels_and_are_shared_per_page(tmp_path):
    path = tmp_path / "page.png"
    Image.new("RGB", (40, 20), (10, 200, 30)).save(path)
    on_disk, blank = _doc(image_path=path, page_size=(40, 20)), _doc(page_size=(30, 10))
    pages = page_images([on_disk, blank, on_disk])
    assert pages[0] is pages[2] and isinstance(pages[1], PageImage)
    assert np.array_equal(np.asarray(pages[0].load_image()), np.asarray(on_disk.load_image()))
    assert pages[0].load_image().getpixel((3, 3)) == (10, 200, 30)
    assert pages[1].load_image().size == (30, 10) and pages[1].load_image().getpixel((0, 0)) == (255, 255, 255)


def test_window_dataset_gives_the_same_items_from_page_images():
    from aetnet.data.encoding.windows import Window

    docs = [_doc(page_size=(64, 48)), _doc(page_size=(32, 80))]
    windows = [Window(doc_index=i % 2, input_ids=[0, 5, 6, 2], bbox=[[0, 0, 0, 0]] * 4, word_ids=[None, 0, 1, None],
                      labels=[-100, 1, 2, -100])
               for i in range(3)]

    def processor(images, return_tensors):
        return {"pixel_values": [np.asarray(images.resize((8, 8)), dtype=np.float32).transpose(2, 0, 1) / 255]}

    with_docs = WindowDataset(windows, docs, processor)
    with_pages = WindowDataset(windows, page_images(docs), processor)
    for i in range(3):
        a, b = with_docs[i], with_pages[i]
        assert a.keys() == b.keys()
        assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_bad_segment_boxes_name_the_document_and_the_field():
    for bad in ({"a": [1, 2, 3, 4]}, {0: [1, 2, 3]}):
        with pytest.raises(DataError) as err:
            _doc(segment_boxes=bad, source="form.json")
        assert "form.json, field 'segment_boxes'" in str(err.value) and "document 'd'" in str(err.value)


def test_missing_coordinate_is_refused_not_read_as_nan():
    with pytest.raises(TypeError):
        _doc(words=["a"], boxes=[[1, 2, None, 4]], labels=None, segment_ids=None, segment_boxes={})



_COLOURS = {0: (200, 10, 10), 1: (10, 10, 200)}


class _CountedPage:
    """A page of one colour that records each read in ``reads``."""

    def __init__(self, index: int, reads: list[int]):
        self.index, self.reads = index, reads

    def load_image(self):
        self.reads.append(self.index)
        return Image.new("RGB", (16, 12), _COLOURS[self.index])


def _to_8x8(images, return_tensors):
    return {"pixel_values": [np.asarray(images.resize((8, 8)), dtype=np.float32).transpose(2, 0, 1) / 255]}


def test_consecutive_windows_of_a_page_read_and_process_it_once():
    """Windows 0-2 on page A, 3 on page B, 4 on page A again: three reads (A, B, A), each window's pixels
    those of its own page, and one window's tensor changed in place leaves the next window of the same page
    untouched."""
    import pickle

    from aetnet.data.encoding.windows import Window

    reads: list[int] = []
    order = [0, 0, 0, 1, 0]
    windows = [Window(doc_index=d, input_ids=[0, 5, 2], bbox=[[0, 0, 0, 0]] * 3, word_ids=[None, 0, None])
               for d in order]
    dataset = WindowDataset(windows, [_CountedPage(0, reads), _CountedPage(1, reads)], _to_8x8)
    items = [dataset[i] for i in range(len(order))]
    assert reads == [0, 1, 0]
    for d, item in zip(order, items):
        expected = np.broadcast_to(np.asarray(_COLOURS[d], dtype=np.float32)[:, None, None] / 255, (3, 8, 8))
        assert np.array_equal(item["pixel_values"].numpy(), expected)
    dataset[4]["pixel_values"].zero_()
    again = dataset[4]["pixel_values"].numpy()[:, 0, 0]
    assert np.array_equal(again, np.asarray(_COLOURS[0], dtype=np.float32) / 255) and reads == [0, 1, 0]
    # a DataLoader worker gets the dataset without the last page
    assert pickle.loads(pickle.dumps(dataset))._page is None and dataset._page is not None
