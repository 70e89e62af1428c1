"""Tests for aetnet.strategies.aet.losses against explicit per-document / per-token / per-patch loops."""

from __future__ import annotations

import logging
import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from aetnet.strategies.aet import losses, pita
from aetnet.strategies.aet.losses import ditc_loss, glitc_loss, imc_loss
from aetnet.strategies.aet.pita import pita_loss, token_patch_index


def _normed(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return sum(float(x) * float(y) for x, y in zip(a.tolist(), b.tolist()))


def _log_softmax(values: list[float]) -> list[float]:
    top = max(values)
    log_z = top + math.log(sum(math.exp(v - top) for v in values))
    return [v - log_z for v in values]


# ----------------------------------------------------------------------------- DITC / IMC


def _contrastive_ref(queries, keys_batch, queue, temp, alpha=0.0, queries_m=None) -> float:
    """Mean over rows of -sum targets * log_softmax, with explicit loops over rows and keys."""
    keys = [keys_batch[c] for c in range(keys_batch.shape[0])] + [
        queue[:, k] for k in range(queue.shape[1])
    ]
    total = 0.0
    for b in range(queries.shape[0]):
        logp = _log_softmax([_dot(queries[b], k) / temp for k in keys])
        onehot = [1.0 if j == b else 0.0 for j in range(len(keys))]
        if alpha:
            soft = [math.exp(x) for x in _log_softmax([_dot(queries_m[b], k) / temp for k in keys])]
            target = [alpha * s + (1 - alpha) * o for s, o in zip(soft, onehot)]
        else:
            target = onehot
        total += -sum(t * lp for t, lp in zip(target, logp))
    return total / queries.shape[0]


def _ditc_inputs(B=3, D=5, K=4, seed=0):
    feats = [_normed(B, D, seed=seed + i) for i in range(4)]
    queues = [_normed(K, D, seed=seed + 10 + i).t().contiguous() for i in range(2)]
    return feats, queues


@pytest.mark.parametrize("alpha", [0.0, 0.4])
def test_ditc_matches_loop(alpha):
    (v, w, v_m, w_m), (iq, tq) = _ditc_inputs()
    temp = 0.07
    got = ditc_loss(v, w, v_m, w_m, iq, tq, temp, alpha=alpha)
    i2t = _contrastive_ref(v, w_m, tq, temp, alpha, queries_m=v_m)
    t2i = _contrastive_ref(w, v_m, iq, temp, alpha, queries_m=w_m)
    assert got.dim() == 0
    assert got.item() == pytest.approx(0.5 * (i2t + t2i), rel=1e-9)


def test_ditc_soft_targets_change_the_loss():
    (v, w, v_m, w_m), (iq, tq) = _ditc_inputs(seed=3)
    hard = ditc_loss(v, w, v_m, w_m, iq, tq, 0.1, alpha=0.0)
    soft = ditc_loss(v, w, v_m, w_m, iq, tq, 0.1, alpha=0.4)
    assert abs(hard.item() - soft.item()) > 1e-4


def test_ditc_hand_worked_tiny_case():
    # B=1, K=1, D=2, temp=0.5.
    v = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    w = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    v_m = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    w_m = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    image_queue = torch.tensor([[0.0], [1.0]], dtype=torch.float64)  # one key (0, 1)
    text_queue = torch.tensor([[1.0], [0.0]], dtype=torch.float64)  # one key (1, 0)
    # i2t logits: v.[w_m, (1,0)]/0.5 = [1.2, 2.0]; t2i logits: w.[v_m, (0,1)]/0.5 = [0.0, 2.0].
    i2t_hard = math.log(1 + math.exp(0.8))
    t2i_hard = math.log(1 + math.exp(2.0))
    got = ditc_loss(v, w, v_m, w_m, image_queue, text_queue, 0.5, alpha=0.0)
    assert got.item() == pytest.approx(0.5 * (i2t_hard + t2i_hard), rel=1e-12)

    # alpha=0.4: momentum logits are v_m.[w_m,(1,0)]/0.5 = [1.2, 2.0] and w_m.[v_m,(0,1)]/0.5 = [1.2, 1.6].
    def soft_ce(logits, logits_m, a=0.4):
        z = sum(math.exp(x) for x in logits)
        z_m = sum(math.exp(x) for x in logits_m)
        targets = [a * math.exp(x) / z_m + (1 - a) * (1.0 if j == 0 else 0.0) for j, x in enumerate(logits_m)]
        return -sum(t * (x - math.log(z)) for t, x in zip(targets, logits))

    expected = 0.5 * (soft_ce([1.2, 2.0], [1.2, 2.0]) + soft_ce([0.0, 2.0], [1.2, 1.6]))
    got = ditc_loss(v, w, v_m, w_m, image_queue, text_queue, 0.5, alpha=0.4)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_ditc_gradient_flows_into_learnable_temperature():
    (v, w, v_m, w_m), (iq, tq) = _ditc_inputs(seed=5)
    temp = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    loss = ditc_loss(v, w, v_m, w_m, iq, tq, temp, alpha=0.4)
    loss.backward()
    assert temp.grad is not None
    # Soft targets are computed without gradient, so the derivative is that of the online logits
    # with targets held fixed; check it with a central difference on the same construction.
    h = 1e-6

    def with_fixed_targets(t):
        keys_t = torch.cat([w_m.t(), tq], 1)
        keys_i = torch.cat([v_m.t(), iq], 1)
        eye = torch.eye(v.shape[0], keys_t.shape[1], dtype=torch.float64)
        tg_i2t = 0.4 * torch.softmax(v_m @ keys_t / 0.2, 1) + 0.6 * eye
        tg_t2i = 0.4 * torch.softmax(w_m @ keys_i / 0.2, 1) + 0.6 * eye
        a = -(tg_i2t * torch.log_softmax(v @ keys_t / t, 1)).sum(1).mean()
        b = -(tg_t2i * torch.log_softmax(w @ keys_i / t, 1)).sum(1).mean()
        return 0.5 * (a + b).item()

    numeric = (with_fixed_targets(0.2 + h) - with_fixed_targets(0.2 - h)) / (2 * h)
    assert temp.grad.item() == pytest.approx(numeric, rel=1e-5)
    assert abs(temp.grad.item()) > 1e-3


def test_ditc_shape_errors():
    (v, w, v_m, w_m), (iq, tq) = _ditc_inputs()
    with pytest.raises(ValueError, match="text_queue"):
        ditc_loss(v, w, v_m, w_m, iq, tq[:-1], 0.1)
    with pytest.raises(ValueError, match="text_feat_m"):
        ditc_loss(v, w, v_m, w_m[:2], iq, tq, 0.1)


def test_imc_matches_loop():
    (v, w, v_pos, w_pos), (iq, tq) = _ditc_inputs(seed=7)
    temp = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    got = imc_loss(v, w, v_pos, w_pos, iq, tq, temp)
    expected = 0.5 * (_contrastive_ref(v, v_pos, iq, 0.1) + _contrastive_ref(w, w_pos, tq, 0.1))
    assert got.item() == pytest.approx(expected, rel=1e-9)
    got.backward()
    assert temp.grad is not None and temp.grad.item() != 0.0


# ----------------------------------------------------------------------------- GLITC


def _glitc_ref(g, locs, temp, mask: list[list[bool]]) -> float:
    B, N = len(mask), len(mask[0])
    per_doc = []
    for b in range(B):
        terms = []
        negs = [
            _dot(g[b], locs[c, j]) / temp for c in range(B) if c != b for j in range(N) if mask[c][j]
        ]
        for i in range(N):
            if not mask[b][i]:
                continue
            pos = _dot(g[b], locs[b, i]) / temp
            denom = math.exp(pos) + sum(math.exp(n) for n in negs)
            terms.append(-math.log(math.exp(pos) / denom))
        if terms:
            per_doc.append(sum(terms) / len(terms))
    return sum(per_doc) / len(per_doc)


def test_glitc_matches_loop_with_padding_mask():
    B, N, D = 4, 5, 6
    g, locs = _normed(B, D, seed=1), _normed(B, N, D, seed=2)
    mask = torch.tensor(
        [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [1, 0, 1, 0, 1]], dtype=torch.bool
    )
    got = glitc_loss(g, locs, 0.2, mask)
    assert got.item() == pytest.approx(_glitc_ref(g, locs, 0.2, mask.tolist()), rel=1e-9)
    # An int 0/1 mask means the same thing.
    assert glitc_loss(g, locs, 0.2, mask.long()).item() == pytest.approx(got.item(), rel=1e-12)
    # Masked locals are neither positives nor negatives: changing them changes nothing.
    scrambled = locs.clone()
    scrambled[~mask] = _normed(int((~mask).sum()), D, seed=99)
    assert glitc_loss(g, scrambled, 0.2, mask).item() == pytest.approx(got.item(), rel=1e-12)


def test_glitc_no_mask_means_all_valid_and_temp_gets_gradient():
    B, N, D = 3, 4, 5
    g, locs = _normed(B, D, seed=4), _normed(B, N, D, seed=5)
    temp = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    got = glitc_loss(g, locs, temp)
    expected = _glitc_ref(g, locs, 0.1, [[True] * N] * B)
    assert got.item() == pytest.approx(expected, rel=1e-9)
    got.backward()
    assert temp.grad is not None and temp.grad.item() != 0.0


def test_glitc_document_without_negatives_gives_zero_and_finite_gradients():
    # Doc 1 is fully masked, so doc 0 has no negatives: its terms are -log(1) = 0.
    g = _normed(2, 3, seed=6).requires_grad_(True)
    locs = _normed(2, 2, 3, seed=7)
    mask = torch.tensor([[1, 1], [0, 0]])
    loss = glitc_loss(g, locs, 0.1, mask)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    loss.backward()
    assert torch.isfinite(g.grad).all()


def test_glitc_single_document_returns_zero_and_warns_once(caplog, monkeypatch):
    monkeypatch.setattr(losses, "_GLITC_SINGLE_DOC_WARNED", False)
    g = torch.randn(1, 4, dtype=torch.float64, requires_grad=True)
    locs = torch.randn(1, 3, 4, dtype=torch.float64)
    with caplog.at_level(logging.WARNING, logger="aetnet.strategies.aet.losses"):
        first = glitc_loss(g, locs, 0.1)
        second = glitc_loss(g, locs, 0.1)
    assert first.item() == 0.0 and second.item() == 0.0
    assert first.dim() == 0 and first.dtype == torch.float64 and first.device == g.device
    first.backward()  # attached to the graph
    assert g.grad is not None
    warnings = [r for r in caplog.records if ">= 2 documents" in r.getMessage()]
    assert len(warnings) == 1


# ----------------------------------------------------------------------------- PITA mapping


def _ref_patch(box, grid, cell, rule="inside") -> int | None:
    """The patch of a box by exact arithmetic and a search over half-open cells [c*cell, (c+1)*cell)
    (the last cell also holds everything beyond): ``inside`` needs both corners in one cell (the
    released ``check_bbox``), ``center`` takes the cell of the box centre."""
    x0, y0, x1, y1 = (Fraction(int(c)) for c in box)
    cell = Fraction(cell)

    def cell_of(v):
        for c in range(grid):
            if c * cell <= v < (c + 1) * cell or c == grid - 1:
                return c

    if rule == "center":
        return cell_of((y0 + y1) / 2) * grid + cell_of((x0 + x1) / 2)
    if cell_of(x0) != cell_of(x1) or cell_of(y0) != cell_of(y1):
        return None
    return cell_of(y0) * grid + cell_of(x0)


def _mapping(bbox_rows, grid, cell, skip_special=True, attn=None, rule="inside"):
    bbox = torch.tensor([bbox_rows])
    attn = torch.ones(1, len(bbox_rows), dtype=torch.long) if attn is None else torch.tensor([attn])
    index, used = token_patch_index(bbox, attn, grid=grid, cell=cell, skip_special=skip_special, rule=rule)
    return [int(i) if u else None for i, u in zip(index[0], used[0])]


def test_mapping_grid2_cell500_by_hand():
    boxes = [
        [100, 100, 200, 200],  # inside cell (0,0) -> patch 0
        [600, 100, 700, 200],  # col 1, row 0 -> patch 1
        [100, 600, 200, 700],  # col 0, row 1 -> patch 2
        [600, 600, 900, 900],  # patch 3
        [400, 100, 600, 200],  # spans cols 0 and 1 -> not used
        [100, 400, 200, 600],  # spans rows 0 and 1 -> not used
        [0, 0, 500, 500],  # end corner exactly on the border: floor(500/500) = 1 != 0 -> spans two cells
        [0, 0, 499, 499],  # one unit less: inside patch 0
        [500, 500, 1000, 1000],  # start on a border belongs to the next cell; 1000 clamps to cell 1 -> patch 3
        [0, 0, 0, 0],  # special token
    ]
    assert _mapping(boxes, 2, 500) == [0, 1, 2, 3, None, None, None, 0, 3, None]
    assert _mapping(boxes, 2, 500, skip_special=False) == [0, 1, 2, 3, None, None, None, 0, 3, 0]
    # centre rule: every token counts, in the cell of its centre ((400+600)/2 = 500 -> col 1).
    assert _mapping(boxes, 2, 500, rule="center") == [0, 1, 2, 3, 1, 2, 0, 0, 3, None]
    assert _mapping(boxes, 2, 500, rule="center", skip_special=False)[-1] == 0


def test_released_cell_rule_border_box_by_hand():
    # The released check_bbox: floor(x0/72) == floor(x1/72) and floor(y0/72) == floor(y1/72).
    boxes = [
        [0, 0, 72, 10],  # x1 = 72 is the border of cells 0 and 1: floor(72/72) = 1 -> two cells, unused
        [0, 0, 71, 71],  # floor(71/72) = 0 -> patch 0
        [72, 144, 143, 215],  # col 1, row 2 -> patch 2*14 + 1 = 29
        [72, 144, 144, 215],  # x1 = 144 = 2*72: spans cols 1 and 2 -> unused
        [936, 0, 1000, 71],  # col 13 (936/72 = 13, 1000/72 = 13.9) -> patch 13
    ]
    assert _mapping(boxes, 14, 72) == [None, 0, 29, None, 13]


def test_mapping_skips_padding_even_when_specials_are_mapped():
    boxes = [[100, 100, 200, 200], [600, 600, 700, 700], [0, 0, 0, 0]]
    assert _mapping(boxes, 2, 500, skip_special=False, attn=[1, 0, 0]) == [0, None, None]


def test_mapping_cell72_and_default_cell():
    # cell=72 (released code): col = floor(x/72); 1000 lies in col 13 (13*72 = 936).
    boxes72 = [[3 * 72 + 1, 5 * 72, 4 * 72 - 1, 5 * 72 + 10], [936, 936, 1000, 1000], [140, 0, 150, 10]]
    assert _mapping(boxes72, 14, 72) == [5 * 14 + 3, 195, None]
    # default cell 1000/14: 500 = 7 cells exactly, both as a start and as an end coordinate.
    boxes = [[500, 0, 571, 70], [429, 0, 499, 10], [429, 0, 500, 10], [0, 929, 71, 1000]]
    assert _mapping(boxes, 14, 1000 / 14) == [7, 6, None, 13 * 14]
    # Cells where float32 x / cell misses an exact border without the tolerance:
    # 500 / (1000/26) and 900 / (1000/30) are whole numbers (13 and 27).
    assert _mapping([[500, 0, 520, 10]], 26, 1000 / 26) == [13]
    assert _mapping([[870, 0, 900, 10]], 30, 1000 / 30) == [None]
    assert _mapping([[870, 0, 899, 10]], 30, 1000 / 30) == [26]


@pytest.mark.parametrize("rule", ["inside", "center"])
@pytest.mark.parametrize("grid,cell", [(2, 500), (3, Fraction(1000, 3)), (14, Fraction(1000, 14)), (14, 72)])
def test_mapping_matches_exact_reference_on_random_boxes(grid, cell, rule):
    g = torch.Generator().manual_seed(grid)
    n = 300
    x0 = torch.randint(0, 1001, (n,), generator=g)
    y0 = torch.randint(0, 1001, (n,), generator=g)
    step = int(cell)
    # Widths up to a cell so that many boxes are inside one cell and many span two; snap some
    # coordinates to cell borders to exercise the border rule.
    x1 = (x0 + torch.randint(0, step + 1, (n,), generator=g)).clamp(max=1000)
    y1 = (y0 + torch.randint(0, step + 1, (n,), generator=g)).clamp(max=1000)
    borders = torch.tensor([int(k * cell) for k in range(grid + 1) if (k * cell) == int(k * cell)])
    snap = torch.randint(0, len(borders), (n,), generator=g)
    x1 = torch.where(torch.arange(n) % 4 == 0, torch.maximum(borders[snap], x0), x1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).tolist()
    got = _mapping(boxes, grid, float(cell), rule=rule)
    expected = [_ref_patch(b, grid, cell, rule) for b in boxes]
    assert got == expected
    if rule == "inside":
        assert any(e is None for e in expected) and sum(e is not None for e in expected) > n // 4
    else:
        assert None not in expected


# ----------------------------------------------------------------------------- PITA loss


def _cos(a: list[float], b: list[float]) -> float:
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
    return 0.0 if na == 0 or nb == 0 else sum(x * y for x, y in zip(a, b)) / (na * nb)


def _text_per_patch(token_feat, bbox, attn, grid, cell, skip_special, rule="inside"):
    """t[b][p] as Python lists (mean of mapped tokens, zeros when none) and non-empty flags."""
    B, L, D = token_feat.shape
    t, filled = [], []
    for b in range(B):
        sums = [[0.0] * D for _ in range(grid * grid)]
        counts = [0] * (grid * grid)
        for k in range(L):
            box = [int(c) for c in bbox[b, k]]
            if not attn[b][k] or (skip_special and box == [0, 0, 0, 0]):
                continue
            p = _ref_patch(box, grid, cell, rule)
            if p is None:
                continue
            counts[p] += 1
            sums[p] = [s + float(x) for s, x in zip(sums[p], token_feat[b, k])]
        t.append([[s / c for s in row] if c else row for row, c in zip(sums, counts)])
        filled.append([c > 0 for c in counts])
    return t, filled


def _pita_cos_ref(patch_feat, token_feat, bbox, attn, grid, cell, skip_special, mask_empty, rule="inside"):
    t, filled = _text_per_patch(token_feat, bbox, attn, grid, cell, skip_special, rule)
    vals = []
    for b in range(patch_feat.shape[0]):
        for p in range(grid * grid):
            if mask_empty and not filled[b][p]:
                continue
            vals.append(_cos(patch_feat[b, p].tolist(), t[b][p]))
    return -sum(vals) / len(vals) if vals else 0.0


def _pita_ce_ref(patch_feat, token_feat, bbox, attn, grid, cell, skip_special, mask_empty, rule="inside"):
    t, filled = _text_per_patch(token_feat, bbox, attn, grid, cell, skip_special, rule)
    P = grid * grid
    docs = []
    for b in range(patch_feat.shape[0]):
        v = [patch_feat[b, p].tolist() for p in range(P)]
        rows = []
        for i in range(P):
            if mask_empty and not filled[b][i]:
                continue
            l1 = [sum(x * y for x, y in zip(v[i], t[b][j])) for j in range(P)]  # v_i . t_j
            l2 = [sum(x * y for x, y in zip(t[b][i], v[j])) for j in range(P)]  # t_i . v_j
            rows.append(0.5 * (-_log_softmax(l1)[i] - _log_softmax(l2)[i]))
        if rows:
            docs.append(sum(rows) / len(rows))
    return sum(docs) / len(docs) if docs else 0.0


def _hand_case():
    """grid=2, cell=500, D=2, one document."""
    patch = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]]], dtype=torch.float64)
    tokens = torch.tensor(
        [[[9.0, 9.0], [1.0, 0.0], [0.0, 2.0], [0.0, 1.0], [5.0, 5.0], [-1.0, 0.0], [7.0, 7.0]]],
        dtype=torch.float64,
    )
    bbox = torch.tensor(
        [[
            [0, 0, 0, 0],  # <s>
            [10, 10, 100, 100],  # patch 0
            [200, 300, 499, 499],  # patch 0
            [600, 10, 900, 100],  # patch 1
            [450, 10, 550, 100],  # spans patches 0 and 1: unused
            [0, 0, 0, 0],  # </s>
            [600, 600, 700, 700],  # padding, would be patch 3
        ]]
    )
    attn = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])
    return patch, tokens, bbox, attn


def test_pita_cosine_hand_case():
    patch, tokens, bbox, attn = _hand_case()
    # Patch 0: mean((1,0),(0,2)) = (0.5,1), cos with (1,0) = 0.5/sqrt(1.25); patch 1: cos = 1.
    c0 = 0.5 / math.sqrt(1.25)
    got = pita_loss(patch, tokens, bbox, attn, grid=2, cell=500)
    assert got.item() == pytest.approx(-(c0 + 1.0) / 2, rel=1e-12)
    got = pita_loss(patch, tokens, bbox, attn, grid=2, cell=500, mask_empty=False)
    assert got.item() == pytest.approx(-(c0 + 1.0) / 4, rel=1e-12)
    # Specials mapped to patch 0: mean((9,9),(1,0),(0,2),(-1,0)) = (9/4, 11/4).
    c0_special = (9 / 4) / math.sqrt((9 / 4) ** 2 + (11 / 4) ** 2)
    got = pita_loss(patch, tokens, bbox, attn, grid=2, cell=500, skip_special=False)
    assert got.item() == pytest.approx(-(c0_special + 1.0) / 2, rel=1e-12)


def test_pita_ce_hand_case():
    patch = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    tokens = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    bbox = torch.tensor([[[10, 10, 20, 20], [600, 10, 700, 20]]])
    attn = torch.ones(1, 2, dtype=torch.long)
    # V T^T = T V^T (symmetric here) = [[2,0,0,0],[0,1,0,0],[0,...],[0,...]].
    row0 = math.log(math.exp(2) + 3) - 2
    row1 = math.log(math.e + 3) - 1
    got = pita_loss(patch, tokens, bbox, attn, grid=2, cell=500, form="ce")
    assert got.item() == pytest.approx((row0 + row1) / 2, rel=1e-12)
    got = pita_loss(patch, tokens, bbox, attn, grid=2, cell=500, form="ce", mask_empty=False)
    assert got.item() == pytest.approx((row0 + row1 + 2 * math.log(4)) / 4, rel=1e-12)


def _random_pita(B, L, D, grid, seed, max_width=250):
    g = torch.Generator().manual_seed(seed)
    patch = torch.randn(B, grid * grid, D, generator=g, dtype=torch.float64)
    tokens = torch.randn(B, L, D, generator=g, dtype=torch.float64)
    x0 = torch.randint(0, 1001, (B, L), generator=g)
    y0 = torch.randint(0, 1001, (B, L), generator=g)
    w = torch.randint(0, max_width, (B, L, 2), generator=g)
    bbox = torch.stack([x0, y0, (x0 + w[..., 0]).clamp(max=1000), (y0 + w[..., 1]).clamp(max=1000)], -1)
    bbox[:, 0] = 0  # <s>
    bbox[:, -3] = 0  # </s>
    attn = torch.ones(B, L, dtype=torch.long)
    attn[0, -2:] = 0  # padding in document 0
    bbox[0, -2:] = 0
    return patch, tokens, bbox, attn


@pytest.mark.parametrize("form", ["cosine", "ce"])
@pytest.mark.parametrize("skip_special", [True, False])
@pytest.mark.parametrize("mask_empty", [True, False])
@pytest.mark.parametrize("grid,cell,rule", [(2, 500, "inside"), (3, Fraction(1000, 3), "inside"), (14, 72, "inside"),
                                            (3, Fraction(1000, 3), "center")])
def test_pita_matches_loop(form, skip_special, mask_empty, grid, cell, rule):
    # Widths up to 0.6 cell: a mix of tokens inside one cell and tokens spanning two.
    patch, tokens, bbox, attn = _random_pita(B=2, L=12, D=3, grid=grid, seed=grid, max_width=int(0.6 * cell))
    filled = _text_per_patch(tokens, bbox, attn.tolist(), grid, cell, skip_special, rule)[1]
    assert 0 < sum(map(sum, filled)) < 2 * grid * grid  # some patches filled, some empty
    ref = _pita_cos_ref if form == "cosine" else _pita_ce_ref
    expected = ref(patch, tokens, bbox, attn.tolist(), grid, cell, skip_special, mask_empty, rule)
    got = pita_loss(patch, tokens, bbox, attn, grid=grid, form=form, cell=float(cell),
                    skip_special=skip_special, mask_empty=mask_empty, rule=rule)
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_pita_gradients_and_empty_batch():
    patch, tokens, bbox, attn = _random_pita(B=2, L=8, D=3, grid=2, seed=0)
    patch.requires_grad_(True)
    tokens.requires_grad_(True)
    pita_loss(patch, tokens, bbox, attn, grid=2, cell=500).backward()
    assert patch.grad.abs().sum() > 0 and tokens.grad.abs().sum() > 0

    # Only specials and padding: nothing to align, a graph-attached zero.
    zero = pita_loss(patch, tokens, torch.zeros_like(bbox), attn, grid=2, cell=500)
    assert zero.item() == 0.0 and zero.dim() == 0 and zero.requires_grad
    zero_ce = pita_loss(patch, tokens, torch.zeros_like(bbox), attn, grid=2, cell=500, form="ce")
    assert zero_ce.item() == 0.0


def test_pita_argument_errors():
    patch, tokens, bbox, attn = _random_pita(B=1, L=4, D=3, grid=2, seed=1)
    with pytest.raises(ValueError, match="cosine, ce"):
        pita_loss(patch, tokens, bbox, attn, grid=2, form="dot")
    with pytest.raises(ValueError, match="grid=3 needs 9"):
        pita_loss(patch, tokens, bbox, attn, grid=3)
    with pytest.raises(ValueError, match="bbox"):
        pita_loss(patch, tokens, bbox[:, :2], attn, grid=2)


# ----------------------------------------------------------------------------- same-document masking


def _contrastive_ref_docs(queries, keys_batch, queue, temp, doc, qdoc, alpha=0.0, queries_m=None) -> float:
    """As _contrastive_ref, but the keys that are other windows of row b's document are dropped
    from row b's candidate list before anything is computed."""
    total = 0.0
    for b in range(queries.shape[0]):
        keys = [keys_batch[c] for c in range(keys_batch.shape[0]) if c == b or doc[c] != doc[b]]
        keys += [queue[:, k] for k in range(queue.shape[1]) if qdoc[k] != doc[b]]
        positive = sum(1 for c in range(b) if doc[c] != doc[b])  # index of key b after dropping
        logp = _log_softmax([_dot(queries[b], k) / temp for k in keys])
        onehot = [1.0 if j == positive else 0.0 for j in range(len(keys))]
        target = onehot
        if alpha:
            soft = [math.exp(x) for x in _log_softmax([_dot(queries_m[b], k) / temp for k in keys])]
            target = [alpha * s + (1 - alpha) * o for s, o in zip(soft, onehot)]
        total += -sum(t * lp for t, lp in zip(target, logp))
    return total / queries.shape[0]


@pytest.mark.parametrize("alpha", [0.0, 0.4])
def test_ditc_and_imc_drop_other_windows_of_the_same_document(alpha):
    (v, w, v_m, w_m), (iq, tq) = _ditc_inputs(B=4, K=5)
    doc, qdoc = [3, 3, 5, 6], [-1, 5, 3, 9, 6]
    ids, qids = torch.tensor(doc), torch.tensor(qdoc)
    got = ditc_loss(v, w, v_m, w_m, iq, tq, 0.07, alpha=alpha, doc_ids=ids, queue_ids=qids)
    expected = 0.5 * (_contrastive_ref_docs(v, w_m, tq, 0.07, doc, qdoc, alpha, v_m)
                      + _contrastive_ref_docs(w, v_m, iq, 0.07, doc, qdoc, alpha, w_m))
    assert got.item() == pytest.approx(expected, rel=1e-9)
    assert got.item() != pytest.approx(ditc_loss(v, w, v_m, w_m, iq, tq, 0.07, alpha=alpha).item(), rel=1e-6)
    got = imc_loss(v, w, v_m, w_m, iq, tq, 0.07, doc_ids=ids, queue_ids=qids)
    expected = 0.5 * (_contrastive_ref_docs(v, v_m, iq, 0.07, doc, qdoc)
                      + _contrastive_ref_docs(w, w_m, tq, 0.07, doc, qdoc))
    assert got.item() == pytest.approx(expected, rel=1e-9)
    # All ids distinct (and unknown queue ids): identical to no masking.
    distinct = ditc_loss(v, w, v_m, w_m, iq, tq, 0.07, alpha=alpha, doc_ids=torch.arange(4),
                         queue_ids=torch.full((5,), -1))
    assert distinct.item() == pytest.approx(ditc_loss(v, w, v_m, w_m, iq, tq, 0.07, alpha=alpha).item(), rel=1e-12)


def test_glitc_ignores_locals_of_other_windows_of_the_same_document():
    B, N, D = 4, 3, 6
    g, locs = _normed(B, D, seed=21), _normed(B, N, D, seed=22)
    doc = [0, 0, 1, 2]
    got = glitc_loss(g, locs, 0.1, doc_ids=torch.tensor(doc))
    per_doc = []
    for b in range(B):
        negs = [_dot(g[b], locs[c, j]) / 0.1 for c in range(B) if doc[c] != doc[b] for j in range(N)]
        terms = []
        for i in range(N):
            pos = _dot(g[b], locs[b, i]) / 0.1
            terms.append(-pos + math.log(math.exp(pos) + sum(math.exp(n) for n in negs)))
        per_doc.append(sum(terms) / N)
    assert got.item() == pytest.approx(sum(per_doc) / B, rel=1e-9)


# ----------------------------------------------------------------------------- no host-device syncs


@pytest.mark.parametrize("form", ["cosine", "ce"])
@pytest.mark.parametrize("mask_empty", [True, False])
@pytest.mark.parametrize("rule", ["inside", "center"])
def test_glitc_and_pita_run_on_meta_tensors_so_they_never_read_values_back(form, mask_empty, rule):
    # Meta tensors have shapes but no values: .item(), bool(tensor) and boolean indexing (whose
    # output shape depends on the data) raise on them, exactly the operations that would make the
    # host wait for the device.
    B, N, D, L, grid = 3, 5, 4, 7, 2
    meta = dict(device="meta")
    g, locs = torch.randn(B, D, **meta), torch.randn(B, N, D, **meta)
    mask = torch.ones(B, N, dtype=torch.bool, **meta)
    temp = torch.tensor(0.1, **meta)
    assert glitc_loss(g, locs, temp, mask, doc_ids=torch.zeros(B, dtype=torch.long, **meta)).shape == ()
    patch, tokens = torch.randn(B, grid * grid, D, **meta), torch.randn(B, L, D, **meta)
    bbox, attn = torch.zeros(B, L, 4, dtype=torch.long, **meta), torch.ones(B, L, dtype=torch.long, **meta)
    loss = pita_loss(patch, tokens, bbox, attn, grid=grid, cell=500, form=form, mask_empty=mask_empty, rule=rule)
    assert loss.shape == ()
    assert pita.pita_coverage(bbox, attn, grid=grid, cell=500, rule=rule).shape == ()


def test_pita_coverage_counts_text_tokens_only():
    boxes = [[[0, 0, 0, 0], [10, 10, 20, 20], [400, 10, 600, 20], [600, 600, 700, 700], [0, 0, 0, 0],
              [10, 10, 20, 20]]]
    attn = [[1, 1, 1, 1, 1, 0]]  # <s>, 3 text tokens, </s>, one padding token
    bbox, attn = torch.tensor(boxes), torch.tensor(attn)
    # inside: 2 of the 3 text tokens (the second spans two cells); center: all 3.
    assert pita.pita_coverage(bbox, attn, grid=2, cell=500).item() == pytest.approx(2 / 3)
    assert pita.pita_coverage(bbox, attn, grid=2, cell=500, rule="center").item() == pytest.approx(1.0)
    assert pita.pita_coverage(torch.zeros_like(bbox), attn, grid=2, cell=500).item() == 0.0
    with pytest.raises(ValueError, match="inside, center"):
        token_patch_index(bbox, attn, grid=2, cell=500, rule="corner")
