"""Training across windows: the windows of one page share a batch (page-packed sampler) and their
entities are paired across windows exactly as evaluation pairs them; the loss over those pairs is
checked against a loop written out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from aetnet.data.documents.relations import candidate_pairs, document_entities, encode_relation_documents, gold_links
from aetnet.data.encoding.page_batches import PageGroupedSampler, pack_pages
from aetnet.data.encoding.windows import Collator
from aetnet.models.relation import batch_pair_targets
from tests.test_relations import _long_form


@pytest.fixture(scope="module")
def tokenizer(tiny_base):
    from aetnet.data.encoding.processor import load_processor

    return load_processor(str(tiny_base / "layoutlmv3")).tokenizer


def _primary(windows, k):
    """The window index evaluation represents entity k from (most context, first on a tie)."""
    return max(((min(p, len(w.input_ids) - 1 - p), -wi) for wi, w in enumerate(windows)
                for kk, p in zip(w.entity_index, w.entity_positions) if kk == k))[1] * -1


def _trained_pairs(windows, targets, e):
    """(head, tail) page entity pairs with a target, and the targets by pair, from (B*E, B*E) targets."""
    out = {}
    for r in range(targets.shape[0]):
        for c in range(targets.shape[1]):
            t = int(targets[r, c])
            if t == -100:
                continue
            (a, i), (b, j) = divmod(r, e), divmod(c, e)
            pair = (windows[a].entity_index[i], windows[b].entity_index[j])
            assert out.setdefault(pair, t) == t
    return out


def test_training_pairs_cross_window_boundaries(tokenizer):
    doc = _long_form()
    ents = document_entities(doc)
    windows = encode_relation_documents([doc], tokenizer, max_length=32, stride=8)
    assert len(windows) >= 3
    batch = Collator(tokenizer.pad_token_id)([w.extra_tensors() | {"input_ids": torch.tensor(w.input_ids)}
                                              for w in windows])
    e = batch["entity_labels"].shape[1]
    targets = batch_pair_targets(batch["relation_labels"], batch["entity_index"], batch["entity_pages"],
                                 batch["entity_primary"], batch["page_relation_labels"])
    trained = _trained_pairs(windows, targets, e)
    gold = {(next(k for k, x in enumerate(ents) if x.id == a), next(k for k, x in enumerate(ents) if x.id == b))
            for a, b in [(0, 1), (2, 3)]}
    # every candidate pair of the page is trained, with its gold target, as evaluation scores them all
    assert trained == {p: int(p in gold) for p in candidate_pairs(ents)}
    # the first question and its answer never share a window: their pair is trained across windows
    q, a = next(k for k, x in enumerate(ents) if x.id == 0), next(k for k, x in enumerate(ents) if x.id == 1)
    assert not any(q in w.entity_index and a in w.entity_index for w in windows) and trained[(q, a)] == 1
    # within windows alone (the old training) it was never seen
    alone = _trained_pairs(windows, batch_pair_targets(batch["relation_labels"], batch["entity_index"],
                                                       batch["entity_pages"], batch["entity_primary"],
                                                       batch["page_relation_labels"][..., :0]), e)
    assert (q, a) not in alone and set(alone) < set(trained)
    # cross-window pairs join the occurrences evaluation keeps
    for r, c in zip(*torch.nonzero(targets != -100, as_tuple=True)):
        (wa, i), (wb, j) = divmod(int(r), e), divmod(int(c), e)
        if wa != wb:
            assert _primary(windows, windows[wa].entity_index[i]) == wa
            assert _primary(windows, windows[wb].entity_index[j]) == wb


def test_loss_over_a_batch_of_two_pages_equals_a_hand_loop(tokenizer, tiny_base):
    """The model's loss on a batch holding a long page's windows and a short page: mean BCE over the
    in-window pairs of every window plus the cross-window pairs of primary occurrences of one page."""
    from aetnet.models.heads import head_class

    docs = [_long_form(), _long_form(3)]
    windows = encode_relation_documents(docs, tokenizer, max_length=32, stride=8)
    assert {w.doc_index for w in windows} == {0, 1}
    ents = [document_entities(d) for d in docs]
    cands = [set(candidate_pairs(x)) for x in ents]
    golds = [set(gold_links(d, x).pairs) for d, x in zip(docs, ents)]
    model = head_class("relation").from_pretrained(str(tiny_base / "layoutlmv3"), num_labels=4).eval()
    size = model.config.input_size
    items = []
    for w in windows:
        item = {"input_ids": torch.tensor(w.input_ids), "bbox": torch.tensor(w.bbox),
                "attention_mask": torch.ones(len(w.input_ids), dtype=torch.long),
                "pixel_values": torch.zeros(3, size, size)}
        items.append(item | w.extra_tensors())
    batch = Collator(tokenizer.pad_token_id)(items)
    with torch.no_grad():
        out = model(**batch)
    factors = out.logits.numpy()
    k = factors.shape[-1] // 2
    terms = []
    for a, wa in enumerate(windows):
        for i, hi in enumerate(wa.entity_index):
            for b, wb in enumerate(windows):
                for j, tj in enumerate(wb.entity_index):
                    if a == b:
                        t = wa.relation_labels[i][j]
                    elif wa.doc_index == wb.doc_index and wa.entity_primary[i] and wb.entity_primary[j]:
                        pair = (hi, tj)
                        t = int(pair in golds[wa.doc_index]) if pair in cands[wa.doc_index] else -100
                    else:
                        continue
                    if t == -100:
                        continue
                    x = float(factors[a, i, :k] @ factors[b, j, k:])
                    terms.append(np.logaddexp(0, x) - t * x)  # BCE with logits
    assert float(out.loss) == pytest.approx(float(np.mean(terms)), rel=1e-4)


def test_pack_pages_keeps_pages_whole_and_yields_every_window_once():
    # pages of 2, 1, 2, 1, 1, 2 windows, then one of 5, in batches of 2
    pages = [0, 0, 1, 2, 2, 3, 4, 5, 5, 6, 6, 6, 6, 6]
    for seed in range(30):
        bins = pack_pages(pages, 2, torch.Generator().manual_seed(seed))
        assert sorted(i for b in bins for i in b) == list(range(len(pages)))
        assert all(len(b) == 2 for b in bins[:-1])
        for d in (0, 2, 5):  # two-window pages always share one batch
            assert sum(1 for b in bins if any(pages[i] == d for i in b)) == 1
        # the long page fills whole batches with consecutive windows; its fifth window is packed apart
        assert [9, 10] in bins and [11, 12] in bins
    sampler = PageGroupedSampler(pages, 2, seed=3)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == sorted(second) == list(range(len(pages))) and first != second
    assert [first[k: k + 2] for k in range(0, len(first), 2)] == pack_pages(pages, 2, torch.Generator().manual_seed(3))


def test_finetune_on_long_real_pages_trains_across_windows(aetnet_cache, shared_data, tmp_path):
    """A short funsd-re run on the real FUNSD sample cut into 128-token windows: batches keep pages
    together and the run trains and scores."""
    from aetnet.train.runner import finetune

    run = finetune("funsd-re", base="tiny", data=str(shared_data / "funsd"), output=tmp_path / "run",
                   overrides=["train.max_steps=2", "train.batch_size=4", "train.logging_steps=1",
                              "data.max_train_documents=3", "data.max_eval_documents=2", "data.max_length=128",
                              "data.stride=32", "train.save_steps=2"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["pages_needing_windows"] > 0 and "chunks_f1" in metrics
    assert np.isfinite(metrics.get("train_loss", 0.0))
