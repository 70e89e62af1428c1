"""aetnet.data.documents.entities: entity-annotated pages -> BIO words, segments and segment boxes (the one
implementation behind the FUNSD and CORD readers). Expected values are worked out by hand."""

from __future__ import annotations

from aetnet.data.documents.entities import Entity, entity_tags, entity_words


def test_entity_tags_hand_worked():
    assert entity_tags("QUESTION", 3) == ["B-QUESTION", "I-QUESTION", "I-QUESTION"]
    assert entity_tags("menu.nm", 1) == ["B-menu.nm"]
    assert entity_tags(None, 2) == ["O", "O"]
    assert entity_tags("X", 0) == []


def test_entity_words_hand_worked():
    page = entity_words([
        Entity(7, "QUESTION", [("Date", [10, 20, 40, 30]), ("  ", [0, 0, 5, 5]), ("of", [45, 18, 60, 32])]),
        Entity(2, None, [("ref", [70, 20, 90, 30])]),  # outside every type: O, but a segment
        Entity(9, "ANSWER", [("", [1, 1, 2, 2]), (" ", [3, 3, 4, 4])]),  # all blank: no segment
        Entity(-1, "ANSWER", [("1999", [100, 19, 130, 33])]),
    ])
    assert page.words == ["Date", "of", "ref", "1999"]
    assert page.boxes == [[10, 20, 40, 30], [45, 18, 60, 32], [70, 20, 90, 30], [100, 19, 130, 33]]
    assert page.labels == ["B-QUESTION", "I-QUESTION", "O", "B-ANSWER"]
    assert page.segment_ids == [7, 7, 2, -1]
    # the blank word's box [0, 0, 5, 5] is not part of the union
    assert page.segment_boxes == {7: [10.0, 18.0, 60.0, 32.0], 2: [70.0, 20.0, 90.0, 30.0],
                                  -1: [100.0, 19.0, 130.0, 33.0]}
    assert list(page.segment_boxes) == [7, 2, -1]
    assert (page.skipped_words, page.empty_entities) == (3, 1)
    doc = page.document(id="p", page_size=(200, 50), source="hand")
    assert doc.labels == page.labels and doc.segment_ids == page.segment_ids
    assert doc.segment_boxes[7] == [10.0, 18.0, 60.0, 32.0]
    assert doc.boxes.tolist()[1] == [45.0, 18.0, 60.0, 32.0]


def test_an_id_given_twice_takes_the_later_entity_box():
    """FUNSD annotations with a repeated entity id: as the FUNSD reader always did, the later entity's box."""
    page = entity_words([Entity(3, "A", [("x", [0, 0, 1, 1])]), Entity(3, "B", [("y", [5, 5, 6, 6])])])
    assert page.segment_ids == [3, 3]
    assert page.labels == ["B-A", "B-B"]
    assert page.segment_boxes == {3: [5.0, 5.0, 6.0, 6.0]}
