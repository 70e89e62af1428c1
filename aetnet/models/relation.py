"""LayoutLMv3 with a relation head: links between a page's entities (question -> answer).

Each entity is represented by the hidden state of its first token and a learned embedding of its
label; two small feed-forward nets turn that into a head and a tail representation, and a biaffine
scorer gives every (head, tail) pair one logit::

    s(h, t) = h^T W t + u_h . h + u_t . t + b

The score is computed as a dot product of two per-entity factors,
``head factor = [W h, u_h . h + b, 1]`` and ``tail factor = [t, 1, u_t . t]``, so the model's output
per window is one (2K,) vector per entity (``logits``) and pairs of entities seen in different
windows of a long page are scored exactly like pairs inside one window (see
:func:`aetnet.data.documents.relations.pair_logits`). The loss is the binary cross-entropy (two-class
cross-entropy with the no-link logit fixed at 0) over every candidate pair in the window.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import (
    LayoutLMv3Config,
    LayoutLMv3Model,
    LayoutLMv3PreTrainedModel,
    LiltConfig,
    LiltModel,
    LiltPreTrainedModel,
)
from transformers.utils import ModelOutput

IGNORE_INDEX = -100


@dataclass
class RelationOutput(ModelOutput):
    """Loss over the candidate pairs and the per-entity factors.

    Attributes:
        loss: scalar BCE over candidate pairs (None without ``relation_labels``).
        logits: (B, E, 2K) per entity, head factor then tail factor; pair logit = head . tail.
        pair_logits: (B, E, E) logit of (head i, tail j) inside each window.
    """

    loss: Tensor | None = None
    logits: Tensor | None = None
    pair_logits: Tensor | None = None


class RelationHead(nn.Module):
    """Entity representations and the factorised biaffine pair scorer.

    Args:
        hidden_size: LayoutLMv3's hidden size H.
        num_entity_labels: number of entity types (rows of the label embedding).
        dropout: dropout on the entity representations.
    """

    def __init__(self, hidden_size: int, num_entity_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        label_dim = max(8, hidden_size // 4)
        self.label_embeddings = nn.Embedding(num_entity_labels, label_dim)
        self.head_ffn = nn.Sequential(nn.Linear(hidden_size + label_dim, hidden_size), nn.ReLU(),
                                      nn.Dropout(dropout))
        self.tail_ffn = nn.Sequential(nn.Linear(hidden_size + label_dim, hidden_size), nn.ReLU(),
                                      nn.Dropout(dropout))
        self.bilinear = nn.Linear(hidden_size, hidden_size, bias=False)
        self.head_linear = nn.Linear(hidden_size, 1)  # u_h and the bias b
        self.tail_linear = nn.Linear(hidden_size, 1, bias=False)  # u_t

    def forward(self, hidden: Tensor, positions: Tensor, labels: Tensor) -> Tensor:
        """Per-entity factors.

        Args:
            hidden: (B, L', H) LayoutLMv3 hidden states (text positions first).
            positions: (B, E) token position of each entity's first token (any value on padding).
            labels: (B, E) entity label ids, -1 on padding entities.

        Returns:
            (B, E, 2K) head factor then tail factor, K = H + 2; zeros on padding entities.
        """
        valid = labels >= 0
        index = positions.clamp(min=0).unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        first = hidden.gather(1, index)  # (B, E, H)
        rep = torch.cat([first, self.label_embeddings(labels.clamp(min=0))], dim=-1)
        h, t = self.head_ffn(rep), self.tail_ffn(rep)
        ones = torch.ones_like(h[..., :1])
        head = torch.cat([self.bilinear(h), self.head_linear(h), ones], dim=-1)
        tail = torch.cat([t, ones, self.tail_linear(t)], dim=-1)
        return torch.cat([head, tail], dim=-1) * valid.unsqueeze(-1).to(hidden.dtype)


def pair_scores(factors: Tensor) -> Tensor:
    """(B, E, 2K) factors -> (B, E, E) logits of (head i, tail j)."""
    k = factors.shape[-1] // 2
    return torch.einsum("bik,bjk->bij", factors[..., :k], factors[..., k:])


def relation_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean binary cross-entropy over candidate pairs, by masking (no data-dependent shapes).

    Args:
        logits: (B, E, E) pair logits.
        targets: (B, E, E) 1 linked, 0 not linked, -100 not a candidate (or padding).

    Returns:
        Scalar; 0 (still attached to ``logits``) when the batch has no candidate pair.
    """
    mask = (targets != IGNORE_INDEX).to(logits.dtype)
    losses = F.binary_cross_entropy_with_logits(logits, targets.clamp(min=0).to(logits.dtype), reduction="none")
    return (losses * mask).sum() / mask.sum().clamp(min=1.0)


def batch_pair_targets(relation_labels: Tensor, entity_index: Tensor, entity_pages: Tensor, entity_primary: Tensor,
                       page_relation_labels: Tensor) -> Tensor:
    """Targets of every pair of entity occurrences in a batch, windows of one page meeting as in evaluation.

    Inside a window the pairs are those of ``relation_labels``; across two windows of the same page,
    a pair is trained when both occurrences are the ones evaluation represents the entities from
    (``entity_primary``), its target read from the head's ``page_relation_labels`` row at the tail's
    page index. Other pairs are -100. The batch holds B windows of E entities: (B*E, B*E) targets,
    so the cost is bounded by the batch, whatever a page's length.

    Args:
        relation_labels: (B, E, E) in-window targets.
        entity_index: (B, E) each entity's index among its page's entities.
        entity_pages: (B, E) each entity's page (-1 on padding).
        entity_primary: (B, E) bool, the occurrence evaluation keeps.
        page_relation_labels: (B, E, N) targets of each entity (head) against its page's entities (tails).
    """
    b, e = entity_index.shape
    n = b * e
    targets = relation_labels.new_full((b, e, b, e), IGNORE_INDEX)
    rows = torch.arange(b, device=relation_labels.device)
    targets[rows, :, rows, :] = relation_labels
    targets = targets.reshape(n, n)
    width = page_relation_labels.shape[-1]
    if width == 0:
        return targets
    window = rows.repeat_interleave(e)
    pages, primary = entity_pages.reshape(n), entity_primary.reshape(n).bool()
    cross = (window[:, None] != window[None, :]) & (pages[:, None] == pages[None, :]) & (pages[:, None] >= 0)
    cross &= primary[:, None] & primary[None, :]
    tails = entity_index.reshape(1, n).clamp(0, width - 1).expand(n, n)
    across = page_relation_labels.reshape(n, width).gather(1, tails)
    return torch.where(cross, across, targets)


class LayoutLMv3ForRelationExtraction(LayoutLMv3PreTrainedModel):
    """LayoutLMv3 + :class:`RelationHead` (``classifier``); ``config.num_labels`` entity types.

    The head is called ``classifier`` like the token head's, so strategies that train or save "the
    head" (lora's ``modules_to_save``, ``head``, ``aet-lora``) treat it alike.
    """

    def __init__(self, config: LayoutLMv3Config) -> None:
        super().__init__(config)
        self.layoutlmv3 = LayoutLMv3Model(config)
        self.classifier = RelationHead(config.hidden_size, config.num_labels, config.hidden_dropout_prob)
        self.post_init()

    def get_input_embeddings(self):
        return self.layoutlmv3.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.layoutlmv3.set_input_embeddings(value)

    def forward(
        self,
        input_ids: Tensor | None = None,
        bbox: Tensor | None = None,
        attention_mask: Tensor | None = None,
        pixel_values: Tensor | None = None,
        entity_positions: Tensor | None = None,
        entity_labels: Tensor | None = None,
        relation_labels: Tensor | None = None,
        page_relation_labels: Tensor | None = None,
        entity_index: Tensor | None = None,
        entity_pages: Tensor | None = None,
        entity_primary: Tensor | None = None,
        **kwargs,
    ) -> RelationOutput:
        """Encode the window, represent its entities, score their pairs.

        Args:
            input_ids: (B, L) token ids; bbox (B, L, 4); attention_mask (B, L); pixel_values (B, 3, S, S).
            entity_positions: (B, E) first-token position of each entity.
            entity_labels: (B, E) entity label ids, -1 on padding.
            relation_labels: (B, E, E) pair targets (1, 0, -100); the loss needs them.
            page_relation_labels, entity_index, entity_pages, entity_primary: training only, so that
                windows of one page in the batch pair their entities (:func:`batch_pair_targets`).
            **kwargs: further LayoutLMv3 inputs (``inputs_embeds``, ``position_ids``, ...).
        """
        hidden = self.layoutlmv3(input_ids, bbox=bbox, attention_mask=attention_mask, pixel_values=pixel_values,
                                 **kwargs)[0]
        return relation_output(self.classifier, hidden, entity_positions, entity_labels, relation_labels,
                               page_relation_labels, entity_index, entity_pages, entity_primary)


def relation_output(classifier: RelationHead, hidden: Tensor, entity_positions: Tensor | None,
                    entity_labels: Tensor | None, relation_labels: Tensor | None,
                    page_relation_labels: Tensor | None, entity_index: Tensor | None, entity_pages: Tensor | None,
                    entity_primary: Tensor | None) -> RelationOutput:
    """Represent a window's entities from the backbone's hidden states (B, L', H), score their pairs, and the
    loss when targets are given (see :meth:`LayoutLMv3ForRelationExtraction.forward` for the arguments)."""
    if entity_positions is None or entity_labels is None:
        batch = hidden.shape[0]
        entity_positions = hidden.new_zeros((batch, 0), dtype=torch.long)
        entity_labels = hidden.new_zeros((batch, 0), dtype=torch.long)
    factors = classifier(hidden, entity_positions, entity_labels)
    scores = pair_scores(factors)
    loss = None
    if relation_labels is not None and page_relation_labels is not None:  # pairs across the batch's windows
        k = factors.shape[-1] // 2
        flat = factors.reshape(-1, factors.shape[-1])
        targets = batch_pair_targets(relation_labels, entity_index, entity_pages, entity_primary,
                                     page_relation_labels)
        loss = relation_loss((flat[:, :k] @ flat[:, k:].T)[None], targets[None])
    elif relation_labels is not None:
        loss = relation_loss(scores, relation_labels)
    return RelationOutput(loss=loss, logits=factors, pair_logits=scores)


class LiltForRelationExtraction(LiltPreTrainedModel):
    """LiLT (text + layout, no image) + :class:`RelationHead` (``classifier``), as
    :class:`LayoutLMv3ForRelationExtraction` over a ``LiltModel`` backbone (``lilt``)."""

    def __init__(self, config: LiltConfig) -> None:
        super().__init__(config)
        self.lilt = LiltModel(config, add_pooling_layer=False)
        self.classifier = RelationHead(config.hidden_size, config.num_labels, config.hidden_dropout_prob)
        self.post_init()

    def get_input_embeddings(self):
        return self.lilt.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.lilt.set_input_embeddings(value)

    def forward(
        self,
        input_ids: Tensor | None = None,
        bbox: Tensor | None = None,
        attention_mask: Tensor | None = None,
        entity_positions: Tensor | None = None,
        entity_labels: Tensor | None = None,
        relation_labels: Tensor | None = None,
        page_relation_labels: Tensor | None = None,
        entity_index: Tensor | None = None,
        entity_pages: Tensor | None = None,
        entity_primary: Tensor | None = None,
        **kwargs,
    ) -> RelationOutput:
        """Encode the window (LiLT reads no image), represent its entities, score their pairs."""
        hidden = self.lilt(input_ids, bbox=bbox, attention_mask=attention_mask, **kwargs)[0]
        return relation_output(self.classifier, hidden, entity_positions, entity_labels, relation_labels,
                               page_relation_labels, entity_index, entity_pages, entity_primary)
