"""``re``: relation extraction (key -> value links) on your own pages.

Pages use the aetnet page format (:mod:`aetnet.data.documents.pages`) with entity targets (``labels`` with
``segments``, or ``entities``) and ``links``: ``[from entity, to entity]`` pairs of segment / entity
ids, read in their given direction. The entity types are discovered from the training split; the
candidate rule is every (head type, tail type) combination that some training link has (for
``[[KEY, VALUE]]`` links: every KEY entity with every VALUE entity of a page). Types, rule and
direction are saved with the model (``aetnet.json`` key ``relations``), so ``predict --links`` applies
the same rule. Metric: link precision / recall / F1, as for ``funsd-re``.
"""

from __future__ import annotations

import logging

from aetnet.config.settings import RunConfig
from aetnet.data.documents.document import Document
from aetnet.data.documents.relations import OUTSIDE, RelationSchema, document_entities, gold_links
from aetnet.data.documents.screen import BadDocuments
from aetnet.errors import AetnetError
from aetnet.registry import TASKS
from aetnet.tasks.funsd_re import RelationTask
from aetnet.tasks.generic import _OwnData

logger = logging.getLogger(__name__)


def discover_schema(train: list[Document]) -> RelationSchema:
    """Entity types and the candidate rule of a training split (see the module docstring).

    Raises:
        AetnetError: no page of the split has a link between two entities with words.
    """
    types = sorted({lb[2:] if lb[:2] in ("B-", "I-") else lb for d in train for lb in (d.labels or [])}
                   - {"O", OUTSIDE})
    labels = (*types, OUTSIDE)
    rule = set()
    for doc in train:
        ents = {e.id: e for e in document_entities(doc, labels) if e.id >= 0}
        for a, b in doc.links:
            if a in ents and b in ents and a != b:
                rule.add((ents[a].label, ents[b].label))
    if not rule:
        raise AetnetError("task re: no training page links two entities (give 'links': [[from, to], ...] "
                          "between entity/segment ids of words; see `aetnet formats show pages`)")
    return RelationSchema(labels, tuple(sorted(rule)), ordered=True)


@TASKS.register("re")
class OwnRelationTask(_OwnData, RelationTask):
    """Key -> value links between the entities of your pages."""

    name = "re"
    demo_hint = "aetnet finetune funsd-re --demo"
    pages_hint = " whose pages carry entities and 'links'"

    def load(self, cfg: RunConfig, demo: bool = False,
             bad_documents: BadDocuments | None = None) -> dict[str, list[Document]]:
        splits = self._map(self._read(cfg, demo, bad_documents, kind="token"), cfg)
        self.schema = discover_schema(splits["train"])
        _warn_unreachable(splits, self.schema)
        self.use_protocol(cfg)
        return splits


def _warn_unreachable(splits: dict[str, list[Document]], schema: RelationSchema) -> None:
    """Say (once, with a page id) when links name entity ids that no word carries: they are never scored."""
    for split, docs in splits.items():
        bad = [(doc.id, gold_links(doc, document_entities(doc, schema.labels), schema).unreachable) for doc in docs]
        bad = [(page, n) for page, n in bad if n]
        if bad:
            logger.warning("re/%s: %d link(s) on %d page(s) name entity ids without words (first: page '%s'); "
                           "they are counted as unreachable_links and never scored", split,
                           sum(n for _, n in bad), len(bad), bad[0][0])
