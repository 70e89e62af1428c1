"""FUNSD relation extraction (``funsd-re``): which question is linked to which answer.

Gold entities are given (the standard protocol); the model scores every candidate
(question, answer) pair of a page and predicts a link where the pair's logit is above 0
(probability 0.5). The candidate rule and the normalisation of FUNSD's unordered ``linking`` are
in :mod:`aetnet.data.relations`. Metric: micro precision / recall / F1 over the links of all pages;
a predicted link is correct when its question and its answer (in that direction) form a gold link.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from aetnet.config import RunConfig
from aetnet.data.document import Document
from aetnet.data.relations import (
    FUNSD_SCHEMA,
    RelationSchema,
    candidate_pairs,
    document_entities,
    encode_relation_documents,
    gold_links,
    link_probability,
    link_scores,
    merge_entity_vectors,
    pair_logits,
)
from aetnet.errors import AetnetError
from aetnet.registry import TASKS
from aetnet.tasks.base import Task
from aetnet.tasks.funsd import funsd_splits, load_funsd


class RelationTask(Task):
    """Links between the gold entities of a page (``kind = "relation"``, headline metric ``f1``)."""

    kind = "relation"
    metric = "f1"
    #: Entity types and candidate rule (FUNSD's: question -> answer, unordered links).
    schema: RelationSchema = FUNSD_SCHEMA

    def label_list(self, splits=None) -> list[str]:
        """The entity types (the head's label embedding rows), not link classes."""
        return list(self.schema.labels)

    def relation_meta(self) -> dict:
        """The schema, saved in the model's ``aetnet.json`` (``relations``) for ``predict --links``."""
        return self.schema.to_meta()

    def encode(self, examples, tokenizer, label2id, cfg: RunConfig):
        return encode_relation_documents(examples, tokenizer, cfg.data.max_length, cfg.data.stride,
                                         cfg.data.box_level, with_targets=label2id is not None, schema=self.schema)

    def evaluate(self, examples: list[Document], windows, outputs, id2label):
        """Page-level pairing: entity vectors merged over windows, every candidate pair scored."""
        entities = [document_entities(doc, self.schema.labels) for doc in examples]
        merged = merge_entity_vectors(windows, outputs, [len(e) for e in entities])
        gold_sets, pred_sets, records = [], [], []
        other = unreachable = n_candidates = unscored = 0
        for doc, ents, vectors in zip(examples, entities, merged):
            gold = gold_links(doc, ents, self.schema)
            other, unreachable = other + gold.other, unreachable + gold.unreachable
            pairs = candidate_pairs(ents, self.schema)
            n_candidates += len(pairs)
            logits = pair_logits(vectors, pairs)
            unscored += int(np.isinf(logits).sum())  # an entity no window represented (never expected)
            predicted = [(p, float(x)) for p, x in zip(pairs, logits) if x > 0]
            gold_sets.append(set(gold.pairs))
            pred_sets.append({p for p, _ in predicted})
            records.append({
                "id": doc.id,
                "pred": [{"key": ents[h].text, "value": ents[t].text, "key_id": ents[h].id, "value_id": ents[t].id,
                          "score": round(link_probability(x), 5), "correct": (h, t) in gold_sets[-1]}
                         for (h, t), x in predicted],
                "gold": [[ents[h].id, ents[t].id] for h, t in gold.pairs],
                "missed": [[ents[h].id, ents[t].id] for h, t in gold.pairs if (h, t) not in pred_sets[-1]],
            })
        metrics: dict[str, Any] = link_scores(gold_sets, pred_sets)
        metrics.update({"candidate_pairs": n_candidates, "other_links": other, "unreachable_links": unreachable,
                        "unscored_pairs": unscored, "pages": len(examples),
                        "pages_needing_windows": sum(1 for n in Counter(w.doc_index for w in windows).values()
                                                     if n > 1)})
        return metrics, records

    def statistics(self, splits, tokenizer, cfg: RunConfig) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for split, docs in splits.items():
            windows = self.encode(docs, tokenizer, None, cfg)
            counts: Counter = Counter()
            for doc in docs:
                ents = document_entities(doc, self.schema.labels)
                gold = gold_links(doc, ents, self.schema)
                counts.update(entities=len(ents), candidate_pairs=len(candidate_pairs(ents, self.schema)),
                              gold_links=len(gold.pairs), other_links=gold.other,
                              unreachable_links=gold.unreachable)
            out[split] = {"documents": len(docs), **dict(counts), "windows": len(windows),
                          "documents_needing_windows": sum(
                              1 for n in Counter(w.doc_index for w in windows).values() if n > 1)}
        return out


@TASKS.register("funsd-re")
class FunsdRelationTask(RelationTask):
    """FUNSD entity linking: question -> answer links from FUNSD's ``linking``."""

    name = "funsd-re"

    def load(self, cfg: RunConfig, demo: bool = False) -> dict[str, list[Document]]:
        """FUNSD as for ``funsd`` (same folders and demo); every page carries its links."""
        if demo:
            from aetnet.data.demo import ensure_demo

            splits = load_funsd(str(ensure_demo("funsd-re")), self.bad_documents)
        else:
            splits = load_funsd(cfg.data.path, self.bad_documents)
        splits = funsd_splits(splits, cfg, f"FUNSD {cfg.data.path or 'demo'}")
        pages = [doc for docs in splits.values() for doc in docs]
        if pages and all(doc.segment_ids is None for doc in pages):
            raise AetnetError(
                f"{cfg.data.path}: funsd-re needs FUNSD's entities and links (the original release's "
                "annotations/*.json with 'linking'); the nielsr/funsd-layoutlmv3 copy has neither. Pass "
                "--data to the original FUNSD folder (training_data/, testing_data/)")
        return splits
