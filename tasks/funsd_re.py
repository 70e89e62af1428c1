"""FUNSD relation extraction (``funsd-re``): which question is linked to which answer.

Gold entities are given (the standard protocol); the model scores every candidate
(question, answer) pair of a page and predicts a link where the pair's logit is above 0
(probability 0.5). The candidate rule and the normalisation of FUNSD's unordered ``linking`` are
in :mod:`aetnet.data.documents.relations`. Metric: micro precision / recall / F1 over the links of all pages;
a predicted link is correct when its question and its answer (in that direction) form a gold link.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np

from aetnet.config.settings import RunConfig
from aetnet.data.documents.document import Document
from aetnet.data.documents.relation_protocols import PROTOCOLS, one_parent, window_entity_chunks
from aetnet.data.documents.relations import (
    FUNSD_SCHEMA,
    RelationSchema,
    candidate_pairs,
    document_entities,
    encode_relation_documents,
    gold_links,
    link_count_scores,
    link_probability,
    merge_entity_vectors,
    pair_logits,
)
from aetnet.data.documents.screen import BadDocuments
from aetnet.data.encoding.key import WindowEncoder
from aetnet.errors import AetnetError
from aetnet.registry import TASKS
from aetnet.tasks.base import Scorer, Task
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

    def data_state(self) -> dict[str, Any]:
        """The schema :meth:`load` settled (the run's protocol; for ``re`` the entity types and rule found)."""
        return {"schema": self.schema}

    def adopt_data_state(self, state: dict[str, Any]) -> None:
        self.schema = state["schema"]

    def encode(self, examples, tokenizer, label2id, cfg: RunConfig):
        return encode_relation_documents(examples, tokenizer, cfg.data.max_length, cfg.data.stride,
                                         cfg.data.box_level, with_targets=label2id is not None, schema=self.schema)

    def window_encoder(self) -> WindowEncoder:
        """:meth:`encode` for the window cache; the schema (entity types, candidate rule, protocol) shapes the
        windows, so it is in the fingerprint."""
        return WindowEncoder(self.encode, self.name, type(self), schema=self.schema)

    def use_protocol(self, cfg: RunConfig) -> None:
        """Take ``relations.protocol`` from the run's configuration (it decides training targets and scoring)."""
        self.schema = replace(self.schema, protocol=cfg.relations.protocol)

    def scorer(self, id2label: dict[int, str]) -> LinkScorer:
        return LinkScorer(id2label, self.schema)

    def statistics(self, splits, tokenizer, cfg: RunConfig) -> dict[str, Any]:
        """Per split: entities, windows and, per protocol, candidate pairs, gold and unreachable links."""
        out: dict[str, Any] = {}
        for split, docs in splits.items():
            windows = self.encode(docs, tokenizer, None, cfg)
            counts: Counter = Counter()
            per_protocol = {name: Counter() for name in PROTOCOLS}
            entities = [document_entities(doc, self.schema.labels) for doc in docs]
            chunks = window_entity_chunks(windows, [len(e) for e in entities])
            for doc, ents, chunk in zip(docs, entities, chunks):
                counts.update(entities=len(ents))
                for name in PROTOCOLS:
                    schema = replace(self.schema, protocol=name)
                    gold = gold_links(doc, ents, schema, chunk)
                    per_protocol[name].update(candidate_pairs=len(candidate_pairs(ents, schema, chunk)),
                                              gold_links=len(gold.pairs), other_links=gold.other,
                                              unreachable_links=gold.unreachable)
            mine = per_protocol[self.schema.protocol]
            out[split] = {"documents": len(docs), "entities": counts["entities"], "protocol": self.schema.protocol,
                          **{k: mine[k] for k in ("candidate_pairs", "gold_links", "other_links",
                                                  "unreachable_links")},
                          "protocols": {name: {k: c[k] for k in ("candidate_pairs", "gold_links", "other_links",
                                                                 "unreachable_links")}
                                        for name, c in per_protocol.items()},
                          "windows": len(windows),
                          "documents_needing_windows": sum(
                              1 for n in Counter(w.doc_index for w in windows).values() if n > 1)}
        return out


class LinkScorer(Scorer):
    """Page-level pairing: entity vectors merged over the page's windows, every candidate pair of the protocol
    scored (``page`` and ``chunks`` predict every candidate with logit > 0, ``all-links`` one parent per
    entity). A ``page`` run also reports the ``chunks`` scores of the same predictions (``chunks_*``).
    Keeps link counts (micro precision / recall / F1 over all pages) and the pages that needed windows."""

    def __init__(self, id2label: dict[int, str], schema: RelationSchema) -> None:
        super().__init__(id2label)
        self.schema = schema
        self.tallies = {schema.protocol: Counter()}
        if schema.protocol == "page":
            self.tallies["chunks"] = Counter()
        self.pages_needing_windows = 0

    def add(self, example, windows, outputs):
        entities = document_entities(example, self.schema.labels)
        (vectors,) = merge_entity_vectors(windows, outputs, [len(entities)])
        (chunk,) = window_entity_chunks(windows, [len(entities)])
        self.pages_needing_windows += len(windows) > 1
        record = None
        for protocol, tally in self.tallies.items():
            schema = self.schema if protocol == self.schema.protocol else replace(self.schema, protocol=protocol)
            page = _page_links(example, entities, vectors, chunk, schema, tally)
            record = record or page
        return record

    def metrics(self):
        metrics: dict[str, Any] = {}
        for protocol, t in self.tallies.items():
            scores = link_count_scores(t["tp"], t["predicted"], t["gold"])
            if protocol == self.schema.protocol:
                metrics.update(scores)
                metrics.update({"candidate_pairs": t["candidates"], "other_links": t["other"],
                                "unreachable_links": t["unreachable"], "unscored_pairs": t["unscored"],
                                "pages": t["pages"]})
            else:
                metrics.update({f"chunks_{k}": scores[k] for k in
                                ("precision", "recall", "f1", "true_links", "predicted_links", "gold_links")})
        metrics["protocol"] = self.schema.protocol
        metrics["pages_needing_windows"] = self.pages_needing_windows
        return metrics


def _page_links(doc: Document, ents, vectors, chunk, schema: RelationSchema, tally: Counter) -> dict[str, Any]:
    """The links predicted on one page under ``schema.protocol``, counted into ``tally``; the page's record."""
    gold = gold_links(doc, ents, schema, chunk)
    pairs = candidate_pairs(ents, schema, chunk)
    logits = pair_logits(vectors, pairs)
    kept = one_parent(pairs, logits) if schema.protocol == "all-links" else [k for k, x in enumerate(logits) if x > 0]
    predicted = [(pairs[k], float(logits[k])) for k in kept]
    gold_set, pred_set = set(gold.pairs), {p for p, _ in predicted}
    tally.update(other=gold.other, unreachable=gold.unreachable, candidates=len(pairs), pages=1,
                 unscored=int(np.isinf(logits).sum()),  # an entity no window represented (never expected)
                 tp=len(gold_set & pred_set), predicted=len(pred_set), gold=len(gold_set))
    return {
        "id": doc.id,
        "pred": [{"key": ents[h].text, "value": ents[t].text, "key_id": ents[h].id, "value_id": ents[t].id,
                  "score": round(link_probability(x), 5), "correct": (h, t) in gold_set}
                 for (h, t), x in predicted],
        "gold": [[ents[h].id, ents[t].id] for h, t in gold.pairs],
        "missed": [[ents[h].id, ents[t].id] for h, t in gold.pairs if (h, t) not in pred_set],
    }


@TASKS.register("funsd-re")
class FunsdRelationTask(RelationTask):
    """FUNSD entity linking: question -> answer links from FUNSD's ``linking``."""

    name = "funsd-re"

    def load(self, cfg: RunConfig, demo: bool = False,
             bad_documents: BadDocuments | None = None) -> dict[str, list[Document]]:
        """FUNSD as for ``funsd`` (same folders and demo); every page carries its links."""
        self.use_protocol(cfg)
        if demo:
            from aetnet.data.demo import ensure_demo

            splits = load_funsd(str(ensure_demo("funsd-re")), bad_documents)
        else:
            splits = load_funsd(cfg.data.path, bad_documents)
        splits = funsd_splits(splits, cfg, f"FUNSD {cfg.data.path or 'demo'}")
        pages = [doc for docs in splits.values() for doc in docs]
        if pages and all(doc.segment_ids is None for doc in pages):
            raise AetnetError(
                f"{cfg.data.path}: funsd-re needs FUNSD's entities and links (the original release's "
                "annotations/*.json with 'linking'); the nielsr/funsd-layoutlmv3 copy has neither. Pass "
                "--data to the original FUNSD folder (training_data/, testing_data/)")
        return splits
