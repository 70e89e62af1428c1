"""AETNet's alignment losses: DITC, IMC and GLITC as pure functions (PITA: :mod:`aetnet.strategies.aet.pita`).

Notation (see ``shared/spec/AETNET.md``): ``B`` documents per batch, ``D`` projected feature size
(256), ``K`` queue length, ``N`` local features per document, ``L`` text tokens, ``P = grid**2``
image patches. ``v``/``w`` are the online image/text CLS features, a ``_m`` suffix (``~`` in the
spec) marks momentum features, ``tau`` (``temp``) is the shared temperature and
``L_cl(q, k+, Q) = -log(exp(q.k+/tau) / sum_{k in Q} exp(q.k/tau))``.

Every function is fully vectorised (no Python loop over documents, tokens or patches), returns a
0-d tensor, and accepts ``temp`` either as a float or as a 0-d tensor so that a learnable
temperature receives gradients. Clamping the temperature to [0.001, 0.5] is the model's job, not
the loss's. Features are expected to be L2-normalised where the docstrings say so; momentum
features and queues are expected to carry no gradient (the momentum encoders have
``requires_grad=False``), the losses do not detach them.

Paper versus the authors' released code (each difference is an argument here):

* DITC: the paper (following ALBEF) uses soft targets with ``alpha = 0.4``; the released code
  effectively uses ``alpha = 0`` (plain InfoNCE).
* PITA: the paper uses ``form="cosine"`` over non-empty patches with ``cell = 1000/14`` and
  skips special tokens; the released code uses ``form="ce"`` (196-class cross-entropy on raw dot
  products), ``cell = 72``, maps ``<s>``/``</s>`` (box 0,0,0,0) to patch 0 and does not mask empty
  patches (``skip_special=False, mask_empty=False``).
* GLITC: the choice of image locals (196 patches vs 9 pooled ones) is made by the caller.

PITA's token-to-patch mapping, its coverage and its loss are in :mod:`aetnet.strategies.aet.pita`.

GLITC and PITA are free of host-device synchronisation: no ``.item()``, ``bool(tensor)`` or
boolean indexing with a data-dependent shape; empty selections are handled by masking arithmetic.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor

logger = logging.getLogger(__name__)

# GLITC with one document per batch has no negatives; say so once per process, not every step.
_GLITC_SINGLE_DOC_WARNED = False


def check_dims(name: str, tensor: Tensor, ndim: int, layout: str) -> None:
    """Raise ``ValueError`` unless ``tensor`` has ``ndim`` dimensions (``layout`` names them)."""
    if tensor.dim() != ndim:
        raise ValueError(f"{name} must have shape {layout}, got {tuple(tensor.shape)}.")


def _check_contrastive_inputs(feats: dict[str, Tensor], queues: dict[str, Tensor]) -> None:
    """Every feature (B, D) with the first one's shape; every queue (D, K) with the same D."""
    first = next(iter(feats.values()))
    for name, t in feats.items():
        check_dims(name, t, 2, "(B, D)")
        if t.shape != first.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(first.shape)}.")
    for name, q in queues.items():
        check_dims(name, q, 2, "(D, K)")
        if q.shape[0] != first.shape[1]:
            raise ValueError(f"{name} has feature size {q.shape[0]}, expected {first.shape[1]}.")


def _zero(*tensors: Tensor) -> Tensor:
    """A 0-d zero on the tensors' device/dtype, attached to the graph of those that need grad."""
    zero = tensors[0].new_zeros(())
    for t in tensors:
        if t.requires_grad:
            zero = zero + (t * 0).sum()
    return zero


def _soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over rows of ``-sum_k targets * log_softmax(logits)``; both (R, C)."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


#: Logit given to keys that are other windows of the query's own document (never a negative).
_MASKED = -1e9


def _same_document(doc_ids: Tensor | None, key_ids: Tensor | None) -> Tensor | None:
    """(B, B+K) True where a key is ANOTHER window of the query's document (the diagonal stays False).

    Args:
        doc_ids: (B,) document id of each batch row, or None (no masking).
        key_ids: (K,) document id of each queue column (-1 for unknown), or None (no queue ids).
    """
    if doc_ids is None:
        return None
    doc_ids = doc_ids.reshape(-1)
    keys = doc_ids if key_ids is None else torch.cat([doc_ids, key_ids.to(doc_ids.device)])
    same = doc_ids[:, None] == keys[None, :]
    same[:, : doc_ids.shape[0]].fill_diagonal_(False)
    return same


def _mask(logits: Tensor, same: Tensor | None) -> Tensor:
    if same is None:
        return logits
    if same.shape != logits.shape:
        raise ValueError(f"document ids give a mask of shape {tuple(same.shape)} for logits {tuple(logits.shape)}; "
                         "pass doc_ids (B,) and queue ids (K,)")
    return logits.masked_fill(same, _MASKED)


def _albef_targets(sim_m: Tensor, alpha: float) -> Tensor:
    """``alpha * softmax(sim_m) + (1 - alpha) * onehot(diag)`` for (B, B+K) momentum logits."""
    onehot = torch.zeros_like(sim_m)
    onehot.fill_diagonal_(1.0)
    if alpha == 0:
        return onehot
    return alpha * F.softmax(sim_m, dim=1) + (1.0 - alpha) * onehot


def ditc_loss(
    image_feat: Tensor,
    text_feat: Tensor,
    image_feat_m: Tensor,
    text_feat_m: Tensor,
    image_queue: Tensor,
    text_queue: Tensor,
    temp: float | Tensor,
    alpha: float = 0.4,
    doc_ids: Tensor | None = None,
    queue_ids: Tensor | None = None,
) -> Tensor:
    """Document-level image-text contrastive loss with ALBEF soft targets.

    ``1/2 [L_cl(v, w~, [w~_B; Tq]) + L_cl(w, v~, [v~_B; Iq])]``, where the one-hot target of row
    ``b`` (column ``b``) is softened to ``alpha * softmax(momentum similarities) + (1 - alpha) *
    onehot``. The soft targets are computed from momentum features only and without gradient.

    Args:
        image_feat: (B, D) online image CLS features, L2-normalised.
        text_feat: (B, D) online text CLS features, L2-normalised.
        image_feat_m: (B, D) momentum image CLS features, L2-normalised.
        text_feat_m: (B, D) momentum text CLS features, L2-normalised.
        image_queue: (D, K) queued momentum image features.
        text_queue: (D, K) queued momentum text features.
        temp: temperature tau, a float or a 0-d tensor.
        alpha: weight of the soft targets; 0 gives plain hard-target InfoNCE.
        doc_ids: optional (B,) document ids: keys that are other windows of the query's document
            (in the batch, or in the queue via ``queue_ids``) are removed from its candidates.
        queue_ids: optional (K,) document ids of the queue columns (-1 matches nothing).

    Returns:
        0-d tensor, the mean of the image-to-text and text-to-image losses.
    """
    _check_contrastive_inputs(dict(image_feat=image_feat, text_feat=text_feat, image_feat_m=image_feat_m,
                                   text_feat_m=text_feat_m), dict(image_queue=image_queue, text_queue=text_queue))
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}.")

    text_keys = torch.cat([text_feat_m.t(), text_queue], dim=1)  # (D, B+K)
    image_keys = torch.cat([image_feat_m.t(), image_queue], dim=1)  # (D, B+K)
    same = _same_document(doc_ids, queue_ids)
    sim_i2t = _mask(image_feat @ text_keys / temp, same)
    sim_t2i = _mask(text_feat @ image_keys / temp, same)
    with torch.no_grad():
        targets_i2t = _albef_targets(_mask(image_feat_m @ text_keys / temp, same), alpha)
        targets_t2i = _albef_targets(_mask(text_feat_m @ image_keys / temp, same), alpha)
    loss_i2t = _soft_cross_entropy(sim_i2t, targets_i2t)
    loss_t2i = _soft_cross_entropy(sim_t2i, targets_t2i)
    return 0.5 * (loss_i2t + loss_t2i)


def imc_loss(
    image_feat: Tensor,
    text_feat: Tensor,
    image_feat_pos: Tensor,
    text_feat_pos: Tensor,
    image_queue: Tensor,
    text_queue: Tensor,
    temp: float | Tensor,
    doc_ids: Tensor | None = None,
    queue_ids: Tensor | None = None,
) -> Tensor:
    """Intra-modal contrastive loss: each modality against an augmented view of itself.

    ``1/2 [CE(v @ [v+_B; Iq] / tau, diag) + CE(w @ [w+_B; Tq] / tau, diag)]``.

    Interpretation of the spec's ``L_cl(v, v+, [v~_B; Iq])``: the positive of document ``b`` is its
    own augmented-view momentum feature ``v+_b``; the key set is the batch of positive-view features
    ``v+_B`` (so the other documents' augmented views are the in-batch negatives) followed by the
    queue. Using ``v~_B`` (un-augmented momentum features) as in-batch keys would make ``v~_b``, a
    second view of the same document, a false negative.

    Args:
        image_feat: (B, D) online image CLS features, L2-normalised.
        text_feat: (B, D) online text CLS features, L2-normalised.
        image_feat_pos: (B, D) momentum features of the augmented image view, L2-normalised.
        text_feat_pos: (B, D) momentum features of the text view, L2-normalised.
        image_queue: (D, K) queued momentum image features.
        text_queue: (D, K) queued momentum text features.
        temp: temperature tau, a float or a 0-d tensor.
        doc_ids, queue_ids: optional document ids, as in :func:`ditc_loss`.

    Returns:
        0-d tensor, the mean of the image and text terms.
    """
    _check_contrastive_inputs(dict(image_feat=image_feat, text_feat=text_feat, image_feat_pos=image_feat_pos,
                                   text_feat_pos=text_feat_pos), dict(image_queue=image_queue, text_queue=text_queue))

    target = torch.arange(image_feat.shape[0], device=image_feat.device)
    same = _same_document(doc_ids, queue_ids)  # other windows of the same document are no negatives
    logits_img = _mask(image_feat @ torch.cat([image_feat_pos.t(), image_queue], dim=1) / temp, same)
    logits_txt = _mask(text_feat @ torch.cat([text_feat_pos.t(), text_queue], dim=1) / temp, same)
    return 0.5 * (F.cross_entropy(logits_img, target) + F.cross_entropy(logits_txt, target))


def glitc_loss(
    global_feat: Tensor,
    local_feat_m: Tensor,
    temp: float | Tensor,
    local_mask: Tensor | None = None,
    doc_ids: Tensor | None = None,
) -> Tensor:
    """Global-local contrastive loss for ONE modality (call once per modality and average).

    For document ``b`` and each valid local ``i`` of ``b``::

        l_bi = -log( exp(g_b.l_bi/t) / (exp(g_b.l_bi/t) + sum_{c != b, j valid} exp(g_b.l_cj/t)) )

    The loss is the mean over documents of the mean over that document's valid locals; masked
    locals are neither positives nor negatives, and documents without a valid local are left out.
    Computed from one (B, B*N) similarity matrix: a masked logsumexp gives each document's negative
    term once, then ``logaddexp`` with each positive (never an N x n x N*n tensor).

    Args:
        global_feat: (B, D) online global (CLS) features, L2-normalised.
        local_feat_m: (B, N, D) momentum local features (patches or tokens), L2-normalised.
        temp: temperature tau, a float or a 0-d tensor.
        local_mask: (B, N) bool or 0/1; nonzero marks a valid local. None means all valid.
        doc_ids: optional (B,) document ids; the locals of other windows of the same document are
            not negatives.

    Returns:
        0-d tensor. With B == 1 there are no negatives: returns zero (attached to the graph) and
        logs a warning once per process.
    """
    global _GLITC_SINGLE_DOC_WARNED
    check_dims("global_feat", global_feat, 2, "(B, D)")
    check_dims("local_feat_m", local_feat_m, 3, "(B, N, D)")
    B, D = global_feat.shape
    if local_feat_m.shape[0] != B or local_feat_m.shape[2] != D:
        raise ValueError(
            f"local_feat_m has shape {tuple(local_feat_m.shape)}, expected ({B}, N, {D})."
        )
    N = local_feat_m.shape[1]
    if local_mask is None:
        valid = torch.ones(B, N, dtype=torch.bool, device=global_feat.device)
    else:
        if tuple(local_mask.shape) != (B, N):
            raise ValueError(f"local_mask has shape {tuple(local_mask.shape)}, expected ({B}, {N}).")
        valid = local_mask.to(device=global_feat.device) != 0

    if B < 2:
        if not _GLITC_SINGLE_DOC_WARNED:
            logger.warning(
                "GLITC needs >= 2 documents per batch (the other documents' locals are its "
                "negatives); with 1 document it is 0. Increase the per-device batch size."
            )
            _GLITC_SINGLE_DOC_WARNED = True
        return _zero(global_feat, local_feat_m)

    sim = (global_feat @ local_feat_m.reshape(B * N, D).t() / temp).view(B, B, N)  # [b, c, j]
    eye = torch.eye(B, dtype=torch.bool, device=sim.device)
    other = ~eye if doc_ids is None else doc_ids.reshape(-1)[:, None] != doc_ids.reshape(-1)[None, :]
    is_negative = other[:, :, None] & valid[None, :, :]  # (B, B, N)
    neg_lse = sim.masked_fill(~is_negative, float("-inf")).flatten(1).logsumexp(dim=1)  # (B,)
    pos = sim.diagonal(dim1=0, dim2=1).t()  # (B, N): pos[b, i] = sim[b, b, i]
    # -log(e^p / (e^p + e^n)) = logaddexp(p, n) - p; n = -inf (no negatives) gives exactly 0.
    per_local = torch.logaddexp(pos, neg_lse[:, None]) - pos
    per_local = per_local.masked_fill(~valid, 0.0)
    counts = valid.sum(dim=1)
    has_local = (counts > 0).to(per_local.dtype)
    per_doc = per_local.sum(dim=1) / counts.clamp(min=1)
    # Mean over documents with a valid local, by masking (no host sync); 0 when there is none.
    return (per_doc * has_local).sum() / has_local.sum().clamp(min=1)
