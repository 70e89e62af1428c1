"""XFUND: forms in Chinese, Japanese, Spanish, French, Italian, German and Portuguese (Xu et al. 2022).

``xfund`` labels entities (BIO over FUNSD's header / question / answer; ``other`` is ``O``) with the
reference XFUND encoding (:mod:`aetnet.data.encoding.xfund`: each entity's text tokenised whole,
tokens boxed by character offsets) and scores entity F1 over tokens as the reference does;
``xfund-re`` links questions to answers with funsd-re's relation machinery and protocols, over the same
reference tokens.

``data.lang`` (``--lang``) picks one language, or ``all``: the seven training splits together (the
"multitask" setting), scored per language (``f1_zh``, ...) and as their mean (``f1_language_mean``).
XFUND's ``val`` is the test split; validation during training is carved from train.
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from typing import Any

from aetnet.config.settings import RunConfig
from aetnet.data.documents.document import Document
from aetnet.data.documents.relations import encode_relation_documents
from aetnet.data.documents.screen import BadDocuments
from aetnet.data.documents.splits import Splits
from aetnet.data.documents.xfund import LANGUAGES, read_xfund
from aetnet.data.encoding.windows import merge_token_predictions, word_predictions
from aetnet.data.encoding.xfund import ENTITY_TEXT_ENCODING, encode_xfund_documents
from aetnet.errors import AetnetError
from aetnet.registry import TASKS
from aetnet.tasks.base import Scorer, TokenClassificationTask
from aetnet.tasks.funsd import FUNSD_LABELS
from aetnet.tasks.funsd_re import RelationTask


def load_xfund(task, cfg: RunConfig, demo: bool, bad_documents: BadDocuments | None) -> Splits:
    """The forms of ``data.lang``: train, and XFUND's val as the evaluated (test) split."""
    if demo:
        raise AetnetError(f"{task.name} has no demo data (XFUND's forms are CC BY-NC-SA 4.0 and not shipped); "
                          "pass --data to a folder holding the release's xx.train.json / xx.val.json and images")
    if not cfg.data.path:
        raise AetnetError(f"{task.name} needs --data: the folder holding the XFUND release's xx.train.json, "
                          "xx.val.json and the images or zips (https://github.com/doc-analysis/XFUND/releases)")
    raw = read_xfund(cfg.data.path, cfg.data.lang, bad_documents, partial=task.partial)
    return Splits({"train": raw["train"], "eval": raw["val"]}, eval_split="val")


def language_counts(docs: list[Document]) -> dict[str, dict[str, Any]]:
    """Per language: forms, entities, words, entity labels and links, as the JSON files hold them."""
    out: dict[str, dict[str, Any]] = {}
    for doc in docs:
        row = out.setdefault(doc.meta["lang"], {"documents": 0, "entities": 0, "words": 0, "labels": Counter(),
                                                "links": 0})
        row["documents"] += 1
        row["entities"] += doc.meta["json_entities"]
        row["words"] += doc.meta["json_words"]
        row["labels"].update(doc.meta["entity_labels"])
        row["links"] += doc.meta["json_links"]
    return {lang: {**row, "labels": dict(sorted(row["labels"].items()))}
            for lang, row in sorted(out.items(), key=lambda kv: LANGUAGES.index(kv[0]))}


@TASKS.register("xfund")
class XfundTask(TokenClassificationTask):
    """XFUND entity labelling, scored per token as the reference scores it (and per language)."""

    name = "xfund"
    labels = FUNSD_LABELS
    encoding = ENTITY_TEXT_ENCODING

    def load(self, cfg: RunConfig, demo: bool = False,
             bad_documents: BadDocuments | None = None) -> dict[str, list[Document]]:
        splits = load_xfund(self, cfg, demo, bad_documents)
        for split in list(splits):
            splits[split] = self.keep_known_labels(splits[split], split, bad_documents)
        return splits

    def encode(self, examples, tokenizer, label2id, cfg: RunConfig):
        return encode_xfund_documents(examples, tokenizer, label2id, cfg.data.max_length, cfg.data.stride,
                                      cfg.data.box_level)

    def scorer(self, id2label: dict[int, str]) -> XfundScorer:
        return XfundScorer(id2label)

    def statistics(self, splits, tokenizer, cfg: RunConfig) -> dict[str, Any]:
        """Per split: forms, words, entities, word labels, tokens and windows of the XFUND encoding, and
        per language what the JSON files hold (``languages``)."""
        out: dict[str, Any] = {}
        for split, docs in splits.items():
            windows = self.encode(docs, tokenizer, None, cfg)
            per_doc = Counter(w.doc_index for w in windows)
            tokens = Counter()
            for w in windows:
                tokens[w.doc_index] = max(tokens[w.doc_index], max((t + 1 for t in w.word_ids if t is not None),
                                                                   default=0))
            out[split] = {
                "documents": len(docs),
                "words": sum(len(d.words) for d in docs),
                "entities": sum(d.meta["entities"] for d in docs),
                "empty_entities_dropped": sum(d.meta["empty_entities"] for d in docs),
                "label_counts": dict(sorted(Counter(x for d in docs for x in (d.labels or [])).items())),
                "tokens": sum(tokens.values()),
                "max_tokens_per_document": max(tokens.values(), default=0),
                "documents_needing_windows": sum(1 for n in per_doc.values() if n > 1),
                "windows": len(windows),
                "languages": language_counts(docs),
            }
        return out


class XfundScorer(Scorer):
    """Seqeval entity F1 over every token (as the reference), overall and per language with their mean.
    The gold label of a token is the one its windows carry; keeps the gold and predicted label lists
    (overall and per language)."""

    def __init__(self, id2label: dict[int, str]) -> None:
        super().__init__(id2label)
        self.gold: list[list[str]] = []
        self.pred: list[list[str]] = []
        self.by_lang: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))

    def add(self, example, windows, outputs):
        tokens, golds = 0, {}
        for window in windows:
            for word, label in zip(window.word_ids, window.labels if window.labels is not None else ()):
                if word is not None:
                    tokens = max(tokens, word + 1)
                    golds.setdefault(word, label)
        (scores,) = merge_token_predictions(windows, outputs, [tokens])
        labels, confidences = word_predictions(scores, self.id2label)
        gold_labels = [self.id2label[golds[t]] for t in range(len(labels))] if golds else []
        if gold_labels:
            self.gold.append(gold_labels)
            self.pred.append(labels)
            self.by_lang[example.meta["lang"]][0].append(gold_labels)
            self.by_lang[example.meta["lang"]][1].append(labels)
        return {"id": example.id, "lang": example.meta["lang"], "gold": gold_labels, "pred": labels,
                "scores": [round(c, 5) for c in confidences]}

    def metrics(self):
        from aetnet.metrics import entity_scores

        metrics = entity_scores(self.gold, self.pred)
        per_lang = {lang: entity_scores(*self.by_lang[lang]) for lang in LANGUAGES if lang in self.by_lang}
        for lang, scores in per_lang.items():
            metrics.update({f"{key}_{lang}": scores[key] for key in ("precision", "recall", "f1")})
        if per_lang:
            metrics["f1_language_mean"] = sum(s["f1"] for s in per_lang.values()) / len(per_lang)
        metrics["languages"] = list(per_lang)
        return metrics


@TASKS.register("xfund-re")
class XfundRelationTask(RelationTask):
    """XFUND entity linking: question -> answer links from ``linking``, funsd-re's machinery and protocols."""

    name = "xfund-re"
    encoding = ENTITY_TEXT_ENCODING

    def load(self, cfg: RunConfig, demo: bool = False,
             bad_documents: BadDocuments | None = None) -> dict[str, list[Document]]:
        self.use_protocol(cfg)
        return load_xfund(self, cfg, demo, bad_documents)

    def encode(self, examples, tokenizer, label2id, cfg: RunConfig):
        """funsd-re's relation windows over the reference XFUND tokens (entity texts tokenised whole)."""
        return encode_relation_documents(examples, tokenizer, cfg.data.max_length, cfg.data.stride,
                                         cfg.data.box_level, with_targets=label2id is not None, schema=self.schema,
                                         encode=functools.partial(encode_xfund_documents, word_units=True))

    def statistics(self, splits, tokenizer, cfg: RunConfig) -> dict[str, Any]:
        out = super().statistics(splits, tokenizer, cfg)
        for split, docs in splits.items():
            out[split]["languages"] = language_counts(docs)
        return out
