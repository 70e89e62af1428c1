"""Relation extraction (funsd-re): entities, candidate pairs and gold links on real FUNSD pages, the
link metric on hand-worked cases, windows and cross-window pairing, the pair scorer and its loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from aetnet.data.documents.document import Document
from aetnet.data.documents.relations import (
    ENTITY_LABELS,
    candidate_pairs,
    document_entities,
    encode_relation_documents,
    gold_links,
    link_scores,
    merge_entity_vectors,
    pair_logits,
)
from aetnet.data.encoding.windows import Collator
from aetnet.models.relation import RelationHead, pair_scores, relation_loss
from aetnet.tasks.funsd import parse_funsd_annotation


def _funsd_files(shared_data):
    files = sorted((shared_data / "funsd" / "dataset").glob("*/annotations/*.json"))
    assert len(files) >= 10
    return files


def _parse(path):
    image = next(path.parent.parent.joinpath("images").glob(path.stem + ".*"))
    return parse_funsd_annotation(path, image)


# ------------------------------------------------------------------------------- real FUNSD pages
def test_gold_links_and_candidates_match_the_json(shared_data):
    for path in _funsd_files(shared_data):
        form = json.loads(path.read_text())["form"]
        # Independent count straight from the JSON: unordered links, entities that have words.
        has_words = {e["id"]: any(str(w["text"]).strip() for w in e["words"]) for e in form}
        label = {e["id"]: e["label"] for e in form}
        links = {frozenset((int(a), int(b))) for e in form for a, b in e["linking"]}
        reachable = [tuple(link) for link in links if all(has_words[i] for i in link)]
        qa = [link for link in reachable if sorted(label[i] for i in link) == ["answer", "question"]]
        n_q = sum(1 for e in form if e["label"] == "question" and has_words[e["id"]])
        n_a = sum(1 for e in form if e["label"] == "answer" and has_words[e["id"]])

        doc = _parse(path)
        ents = document_entities(doc)
        gold = gold_links(doc, ents)
        assert len(ents) == sum(has_words.values()), path.name
        assert len(gold.pairs) == len(qa), path.name
        assert len(gold.pairs) + gold.other + gold.unreachable == len(links), path.name
        assert gold.unreachable == len(links) - len(reachable), path.name
        assert len(candidate_pairs(ents)) == n_q * n_a, path.name
        for h, t in gold.pairs:  # normalised direction: question -> answer
            assert (ents[h].label, ents[t].label) == ("QUESTION", "ANSWER")


def test_hand_checked_page(shared_data):
    path = shared_data / "funsd" / "dataset" / "testing_data" / "annotations" / "82092117.json"
    doc = _parse(path)
    ents = document_entities(doc)
    gold = gold_links(doc, ents)
    by_id = {e.id: e for e in ents}
    pairs = {(ents[h].id, ents[t].id) for h, t in gold.pairs}
    # Read off the file by hand: 9 links, two of them listed answer-id-first ([19, 3], [13, 12]).
    assert pairs == {(1, 14), (2, 27), (19, 3), (4, 7), (5, 24), (13, 12), (16, 15), (17, 18), (21, 20)}
    assert by_id[19].text == "NUMBER OF PAGES INCLUDING COVER SHEET:" and by_id[3].text == "3"
    assert by_id[1].text == "TO:" and by_id[14].text == "George Baroody"
    assert 0 not in by_id  # entity 0 has no words
    assert gold.other == 0 and gold.unreachable == 0
    assert len(candidate_pairs(ents)) == 10 * 9  # 10 questions with words (22 unlinked), 9 answers
    assert by_id[22].label == "QUESTION" and by_id[10].label == "HEADER" and by_id[6].label == "OTHER"


# ------------------------------------------------------------------------------------------ metric
def test_link_metric_hand_worked():
    gold = [{(0, 1), (2, 3)}, {(5, 6)}]
    # page 1: one right, one reversed (wrong), one extra; page 2: missed
    pred = [{(0, 1), (3, 2), (4, 5)}, set()]
    m = link_scores(gold, pred)
    assert m["true_links"] == 1 and m["predicted_links"] == 3 and m["gold_links"] == 3
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx(1 / 3)
    m = link_scores([{(0, 1), (2, 3)}], [{(0, 1)}])
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((1.0, 0.5, 2 / 3))
    assert link_scores([set()], [set()])["f1"] == 0.0


# ------------------------------------------------------------------------------------------ windows
@pytest.fixture(scope="module")
def tokenizer(tiny_base):
    from aetnet.data.encoding.processor import load_processor

    return load_processor(str(tiny_base / "layoutlmv3")).tokenizer


def _long_form(n_filler: int = 60) -> Document:
    """Question 'Name:' at the top, its answer after many filler words, one more pair at the end."""
    words, labels, segs = ["Name:"], ["B-QUESTION"], [0]
    for i in range(n_filler):
        words.append("memorandum")
        labels.append("O")
        segs.append(100 + i)
    words += ["John", "Smith", "Date:", "01/02/1990"]
    labels += ["B-ANSWER", "I-ANSWER", "B-QUESTION", "B-ANSWER"]
    segs += [1, 1, 2, 3]
    boxes = [[10 + 7 * (i % 60), 10 + 12 * (i // 60), 16 + 7 * (i % 60), 20 + 12 * (i // 60)]
             for i in range(len(words))]
    return Document(id="long", words=words, boxes=boxes, page_size=(500, 400), labels=labels, segment_ids=segs,
                    links=[(0, 1), (1, 0), (3, 2)], source="long-form")


def test_windows_carry_entities_and_targets(tokenizer):
    doc = _long_form()
    ents = document_entities(doc)
    windows = encode_relation_documents([doc], tokenizer, max_length=32, stride=8)
    assert len(windows) >= 3
    seen = set()
    for w in windows:
        for k, pos in zip(w.entity_index, w.entity_positions):
            seen.add(k)
            assert w.word_ids[pos] == ents[k].first_word and (pos == 0 or w.word_ids[pos - 1] != ents[k].first_word)
        n = len(w.entity_index)
        assert np.array(w.relation_labels).shape == (n, n)
        for a, ka in enumerate(w.entity_index):
            for b, kb in enumerate(w.entity_index):
                want = -100
                if (ents[ka].label, ents[kb].label) == ("QUESTION", "ANSWER"):
                    want = int((ents[ka].id, ents[kb].id) in {(0, 1), (2, 3)})
                assert w.relation_labels[a][b] == want
    assert seen == set(range(len(ents)))
    assert all(len(w.word_bbox) == len(w.input_ids) for w in windows)  # AET's PITA reads word boxes
    # the first question and its answer never share a window: the cross-window case is real
    q, a = next(k for k, e in enumerate(ents) if e.id == 0), next(k for k, e in enumerate(ents) if e.id == 1)
    assert not any(q in w.entity_index and a in w.entity_index for w in windows)


def test_cross_window_pairs_use_the_best_window(tokenizer):
    doc = _long_form()
    ents = document_entities(doc)
    windows = encode_relation_documents([doc], tokenizer, max_length=32, stride=8)
    # Fake outputs: entity k in window w gets head factor e_k * (w + 1) and tail factor e_k.
    dim = len(ents)
    outputs = []
    for wi, w in enumerate(windows):
        rows = []
        for k in w.entity_index:
            vec = np.zeros(2 * dim)
            vec[k] = wi + 1.0
            vec[dim + k] = 1.0
            rows.append(vec)
        outputs.append(np.array(rows).reshape(len(rows), 2 * dim))
    merged = merge_entity_vectors(windows, outputs, [len(ents)])[0]
    for k in range(len(ents)):  # independently: the window maximising min(pos, len - 1 - pos)
        best = max(((min(p, len(w.input_ids) - 1 - p), wi) for wi, w in enumerate(windows)
                    for kk, p in zip(w.entity_index, w.entity_positions) if kk == k), key=lambda x: x[0])
        assert merged[k][k] == best[1] + 1.0
    # a pair across windows: score = head . tail computed by hand from the chosen rows
    q, a = next(k for k, e in enumerate(ents) if e.id == 0), next(k for k, e in enumerate(ents) if e.id == 1)
    got = pair_logits(merged, [(q, a), (q, q)])
    assert got[0] == 0.0 and got[1] == merged[q][q] * 1.0
    assert pair_logits([None, merged[a]], [(0, 1)])[0] == -np.inf


def test_collator_pads_entity_tensors(tokenizer):
    docs = [_long_form(4), _long_form(0)]
    docs[1].id = "short"
    windows = encode_relation_documents(docs, tokenizer, max_length=64, stride=8)
    items = []
    for w in windows:
        item = {"input_ids": torch.tensor(w.input_ids), "attention_mask": torch.ones(len(w.input_ids)),
                "bbox": torch.tensor(w.bbox)}
        item.update(w.extra_tensors())
        items.append(item)
    batch = Collator(tokenizer.pad_token_id)(items)
    n = max(len(w.entity_index) for w in windows)
    assert batch["entity_labels"].shape == (len(windows), n) and batch["relation_labels"].shape == (len(windows), n, n)
    for row, w in enumerate(windows):
        e = len(w.entity_index)
        assert batch["entity_labels"][row, :e].tolist() == w.entity_labels
        assert (batch["entity_labels"][row, e:] == -1).all()
        assert batch["relation_labels"][row, :e, :e].tolist() == w.relation_labels
        assert (batch["relation_labels"][row, e:] == -100).all()
        assert (batch["relation_labels"][row, :, e:] == -100).all()


# ------------------------------------------------------------------------------------------- model
def _rep(head, hidden, positions, labels, b, k):
    """Entity k of window b: its first token's state beside its label embedding."""
    return torch.cat([hidden[b, positions[b, k]], head.label_embeddings.weight[labels[b, k]]])


def test_factorised_scores_equal_the_biaffine_formula():
    torch.manual_seed(0)
    head = RelationHead(hidden_size=16, num_entity_labels=len(ENTITY_LABELS), dropout=0.0).eval()
    hidden = torch.randn(2, 10, 16)
    positions = torch.tensor([[1, 4, 7], [2, 3, 0]])
    labels = torch.tensor([[1, 2, 2], [1, 2, -1]])
    factors = head(hidden, positions, labels)
    scores = pair_scores(factors)
    for b in range(2):
        for i in range(3):
            for j in range(3):
                if labels[b, i] < 0 or labels[b, j] < 0:
                    assert scores[b, i, j] == 0
                    continue
                h = head.head_ffn(_rep(head, hidden, positions, labels, b, i))
                t = head.tail_ffn(_rep(head, hidden, positions, labels, b, j))
                want = (h @ head.bilinear.weight.T @ t + head.head_linear.weight[0] @ h + head.head_linear.bias[0]
                        + head.tail_linear.weight[0] @ t)
                assert scores[b, i, j].item() == pytest.approx(want.item(), abs=1e-5)


def test_relation_loss_is_bce_over_candidates():
    logits = torch.tensor([[[0.5, -1.0], [2.0, 0.0]]])
    targets = torch.tensor([[[1, -100], [0, -100]]])
    p1, p2 = 1 / (1 + np.exp(-0.5)), 1 / (1 + np.exp(-2.0))
    want = (-np.log(p1) - np.log(1 - p2)) / 2
    assert relation_loss(logits, targets).item() == pytest.approx(want, rel=1e-6)
    empty = relation_loss(logits.requires_grad_(), torch.full_like(targets, -100))
    assert empty.item() == 0.0 and empty.requires_grad


def test_demo_forms_link_every_question_to_its_answer(aetnet_cache):
    from aetnet.data.demo import ensure_demo
    from aetnet.tasks.funsd import load_funsd

    splits = load_funsd(str(ensure_demo("funsd-re")))
    assert (len(splits["train"]), len(splits["eval"])) == (120, 24)
    for doc in splits["train"][:20] + splits["eval"]:
        ents = document_entities(doc)
        gold = gold_links(doc, ents)
        questions = [k for k, e in enumerate(ents) if e.label == "QUESTION"]
        # each question has exactly one answer (an unfilled answer has no words: unreachable)
        assert len(gold.pairs) + gold.unreachable == len(questions) > 0
        assert sorted(h for h, _ in gold.pairs) == sorted(set(h for h, _ in gold.pairs))


def test_windows_without_entities_train(tiny_base):
    from aetnet.models.relation import LayoutLMv3ForRelationExtraction

    model = LayoutLMv3ForRelationExtraction.from_pretrained(str(tiny_base / "layoutlmv3"), num_labels=4)
    size = model.config.input_size
    out = model(input_ids=torch.tensor([[0, 5, 6, 2]] * 2), bbox=torch.zeros(2, 4, 4, dtype=torch.long),
                attention_mask=torch.ones(2, 4, dtype=torch.long), pixel_values=torch.zeros(2, 3, size, size),
                entity_positions=torch.zeros(2, 0, dtype=torch.long), entity_labels=torch.zeros(2, 0, dtype=torch.long),
                relation_labels=torch.zeros(2, 0, 0, dtype=torch.long))
    assert out.logits.shape[:2] == (2, 0) and out.loss.item() == 0.0
    out.loss.backward()  # an empty batch still backpropagates (zero gradients), no error
