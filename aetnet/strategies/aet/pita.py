"""PITA (patch-level image-text alignment): tokens placed on the image patch grid by their boxes, the
share of text tokens placed (coverage), and the loss, as pure functions.

Notation as in :mod:`aetnet.strategies.aet.losses`: ``B`` documents, ``L`` text tokens, ``P = grid**2`` patches,
``D`` feature size. The paper uses ``form="cosine"`` over non-empty patches with ``cell = 1000/14``
and skips special tokens; the released code uses ``form="ce"``, ``cell = 72``, maps ``<s>``/``</s>``
to patch 0 and does not mask empty patches (see :func:`pita_loss`).

PITA token-to-patch rules (``rule``): ``inside`` (paper and released code) uses a token only when
``floor(x0 / cell) == floor(x1 / cell)`` and ``floor(y0 / cell) == floor(y1 / cell)``, exactly the
released ``check_bbox``: cells are half-open, so a box ending ON a cell border spans two cells.
``center`` maps every token to the cell holding its box centre. Which boxes are mapped (each token's
own word box, or the segment boxes LayoutLMv3 sees) is the caller's choice (``aet.pita_boxes``).

PITA coverage (share of text tokens mapped to a patch, grid 14) on the real samples in
``tests/data`` (every split, 512-token windows, stride 128; ``tests/test_pita_coverage.py``):

==========================================  =======  =======
boxes / rule / cell                         FUNSD    CORD
==========================================  =======  =======
word boxes, inside, 1000/14 (default)       19.0 %   7.3 %
word boxes, center, 1000/14                 100 %    100 %
model (segment) boxes, inside, 72 (preset)  1.3 %    3.8 %
==========================================  =======  =======

Before word boxes the default mapped segment boxes: 1.7 % (FUNSD) and 0 % (CORD, whose segments
were whole menu items; since they are lines, 3.8 %).

Free of host-device synchronisation: empty selections are handled by masking arithmetic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from aetnet.strategies.aet.losses import check_dims

PITA_FORMS = ("cosine", "ce")
PITA_RULES = ("inside", "center")

# Tolerance, in cell units, for box coordinates lying on a cell border (float error of x / cell).
# Integer coordinates on the 0-1000 scale are at least 1/cell >= 1e-3 cell units apart.
_BORDER_EPS = 1e-4


def _cell_of(coord: Tensor, cell: float, grid: int) -> Tensor:
    """``floor(coord / cell)`` clamped to ``[0, grid - 1]`` (float tensor).

    A tolerance of 1e-4 cell units absorbs float error of ``coord / cell`` on a border (e.g.
    500 / (1000/14) = 7): integer coordinates on the 0-1000 scale are at least 1/cell >= 1e-3 cell
    units apart, so no two coordinates are confused.
    """
    return torch.floor(coord / cell + _BORDER_EPS).clamp(0, grid - 1)


def token_patch_index(
    bbox: Tensor,
    attention_mask: Tensor,
    grid: int = 14,
    cell: float = 1000 / 14,
    skip_special: bool = True,
    rule: str = "inside",
) -> tuple[Tensor, Tensor]:
    """Maps each token to an image patch by its box.

    Cell indices are ``floor(coord / cell)``, clamped to ``grid - 1`` (the last row and column
    absorb anything beyond ``grid * cell``, e.g. x = 1000 with cell = 1000/14).

    * ``rule="inside"`` (paper and released code): the token is used when its start and end corners
      fall in the same cell, ``floor(x0/cell) == floor(x1/cell)`` and the same for y (the released
      ``check_bbox``). Cells are half-open: a box ending exactly ON a cell border spans two cells
      (with cell 500, [0, 0, 500, 10] is not used; [0, 0, 499, 10] is patch 0).
    * ``rule="center"``: every token is used, in the cell holding its box centre
      ``((x0 + x1) / 2, (y0 + y1) / 2)``.

    Args:
        bbox: (B, L, 4) boxes (x0, y0, x1, y1) on the 0-1000 scale.
        attention_mask: (B, L); padding (0) is never used.
        grid: patches per side.
        cell: cell size in box units.
        skip_special: skip tokens whose box is exactly [0, 0, 0, 0] (LayoutLMv3's ``<s>``, ``</s>``,
            padding); when False they map by the rule to patch 0, as the released code did.
        rule: ``inside`` or ``center``.

    Returns:
        ``patch_index`` (B, L) long in ``[0, grid * grid)``, ``row * grid + col`` (meaningful where
        used), and ``used`` (B, L) bool.
    """
    if rule not in PITA_RULES:
        raise ValueError(f"Unknown PITA rule {rule!r}; choose one of {', '.join(PITA_RULES)}.")
    box = bbox.to(torch.float32)
    if rule == "center":
        start = _cell_of((box[..., :2] + box[..., 2:]) / 2, cell, grid)  # (B, L, 2): col, row
        used = attention_mask != 0
    else:
        start = _cell_of(box[..., :2], cell, grid)
        end = _cell_of(box[..., 2:], cell, grid)
        used = (end == start).all(dim=-1) & (attention_mask != 0)
    if skip_special:
        used &= (bbox != 0).any(dim=-1)
    start = start.long()
    patch_index = start[..., 1] * grid + start[..., 0]
    return patch_index, used


def pita_coverage(
    bbox: Tensor, attention_mask: Tensor, grid: int = 14, cell: float = 1000 / 14, rule: str = "inside"
) -> Tensor:
    """Share of text tokens PITA maps to a patch (a 0-d tensor, no host sync).

    Text tokens are real tokens (``attention_mask`` 1) with a box other than [0, 0, 0, 0]; special,
    question and padding tokens count neither above nor below the line.

    Args:
        bbox: (B, L, 4) the boxes PITA maps, on the 0-1000 scale.
        attention_mask: (B, L) 1 for real tokens.
        grid, cell, rule: as in :func:`token_patch_index`.

    Returns:
        0-d float tensor in [0, 1]; 0 when the batch has no text token.
    """
    _, used = token_patch_index(bbox, attention_mask, grid, cell, skip_special=True, rule=rule)
    text = (attention_mask != 0) & (bbox != 0).any(dim=-1)
    return used.sum().to(torch.float32) / text.sum().clamp(min=1).to(torch.float32)


def _check_pita_inputs(patch_feat: Tensor, token_feat: Tensor, bbox: Tensor, attention_mask: Tensor,
                       grid: int, form: str, cell: float) -> None:
    if form not in PITA_FORMS:
        raise ValueError(f"Unknown PITA form {form!r}; choose one of {', '.join(PITA_FORMS)}.")
    check_dims("patch_feat", patch_feat, 3, "(B, grid*grid, D)")
    check_dims("token_feat", token_feat, 3, "(B, L, D)")
    check_dims("bbox", bbox, 3, "(B, L, 4)")
    check_dims("attention_mask", attention_mask, 2, "(B, L)")
    B, P, D = patch_feat.shape
    L = token_feat.shape[1]
    if P != grid * grid:
        raise ValueError(
            f"patch_feat has {P} patches but grid={grid} needs {grid * grid}; pass patch features "
            "without the CLS token and the matching grid."
        )
    if token_feat.shape[0] != B or token_feat.shape[2] != D:
        raise ValueError(f"token_feat has shape {tuple(token_feat.shape)}, expected ({B}, L, {D}).")
    if tuple(bbox.shape) != (B, L, 4) or tuple(attention_mask.shape) != (B, L):
        raise ValueError(
            f"bbox {tuple(bbox.shape)} and attention_mask {tuple(attention_mask.shape)} must have "
            f"shapes ({B}, {L}, 4) and ({B}, {L})."
        )
    if cell <= 0:
        raise ValueError(f"cell must be positive, got {cell}.")


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask`` (same shape) is set; 0 when nothing is (no host sync)."""
    weights = mask.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1)


def pita_loss(
    patch_feat: Tensor,
    token_feat: Tensor,
    bbox: Tensor,
    attention_mask: Tensor,
    grid: int = 14,
    form: str = "cosine",
    cell: float = 1000 / 14,
    skip_special: bool = True,
    mask_empty: bool = True,
    rule: str = "inside",
) -> Tensor:
    """Patch-level image-text alignment.

    Each token is mapped to a patch by its box (see :func:`token_patch_index`); ``t_i`` is the mean
    of the token features mapped to patch ``i`` (zero when none), ``v_i`` the image-aligner feature
    of patch ``i``.

    * ``form="cosine"`` (paper): ``-(1/N) sum cos(v_i, t_i)`` over (document, patch) pairs; with
      ``mask_empty`` only non-empty patches count (N = their number in the batch), otherwise all
      ``B * P`` pairs count (an empty patch contributes cos = 0).
    * ``form="ce"`` (released code): per document, logits ``V @ T^T`` and ``T @ V^T`` (P x P, raw
      dot products, no temperature), target ``i`` for row ``i``; ``0.5 * (CE1 + CE2)`` averaged over
      rows (only rows of non-empty patches with ``mask_empty``; every column stays in the softmax),
      then over documents (documents without a used token are left out when masking).

    Args:
        patch_feat: (B, P, D) patch features, CLS excluded, P = grid * grid.
        token_feat: (B, L, D) token representations.
        bbox: (B, L, 4) the boxes that place tokens on the page, 0-1000 scale.
        attention_mask: (B, L) 1 for real tokens, 0 for padding.
        grid: patches per side.
        form: "cosine" or "ce".
        cell: cell size in box units (paper 1000/14, released code 72).
        skip_special: skip tokens with box [0, 0, 0, 0].
        mask_empty: count only patches with at least one token.
        rule: "inside" (the whole box in one cell) or "center" (the cell of the box centre).

    Returns:
        0-d tensor; zero (attached to the graph) when no patch is non-empty under ``mask_empty``.
    """
    _check_pita_inputs(patch_feat, token_feat, bbox, attention_mask, grid, form, cell)
    B, P, D = patch_feat.shape
    patch_index, used = token_patch_index(bbox, attention_mask, grid, cell, skip_special, rule)
    # Every token is scattered (unused ones with weight 0): shapes never depend on the data.
    flat_index = (torch.arange(B, device=patch_index.device)[:, None] * P + patch_index).reshape(-1)
    weight = used.to(token_feat.dtype).reshape(-1)
    sums = token_feat.new_zeros(B * P, D).index_add(0, flat_index, token_feat.reshape(-1, D) * weight[:, None])
    counts = token_feat.new_zeros(B * P).index_add(0, flat_index, weight)
    text_patch = (sums / counts.clamp(min=1)[:, None]).view(B, P, D)  # t_i, zero when empty
    nonempty = (counts > 0).view(B, P)

    if form == "cosine":
        cos = F.cosine_similarity(patch_feat, text_patch, dim=-1)  # (B, P); 0 where t_i = 0
        return -(_masked_mean(cos, nonempty) if mask_empty else cos.mean())

    logits = torch.bmm(patch_feat, text_patch.transpose(1, 2))  # (B, P, P): [b, i, j] = v_i . t_j
    diag = logits.diagonal(dim1=1, dim2=2)
    ce_v2t = logits.logsumexp(dim=2) - diag  # row i of V @ T^T
    ce_t2v = logits.logsumexp(dim=1) - diag  # row i of T @ V^T is column i of V @ T^T
    per_row = 0.5 * (ce_v2t + ce_t2v)  # (B, P)
    if not mask_empty:
        return per_row.mean()
    rows = nonempty.sum(dim=1)
    per_doc = (per_row * nonempty.to(per_row.dtype)).sum(dim=1) / rows.clamp(min=1)
    return _masked_mean(per_doc, rows > 0)
