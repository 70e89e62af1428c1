"""Splits: a reader's split names mapped onto the runner's ``train`` / ``eval`` (/ ``validation``), never
evaluating on what is trained on, and the deterministic, group-wise carve-out used when a dataset has a
single split.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from aetnet.errors import AetnetError

logger = logging.getLogger(__name__)


def carve_out_eval(
    items: Sequence[Any], eval_fraction: float, seed: int, group: Callable[[Any], str]
) -> tuple[list[Any], list[Any]]:
    """Split one pool into (train, eval) reproducibly, whole groups at a time.

    Group keys are sorted, permuted with ``seed``, and the first ``round(eval_fraction * groups)``
    (at least one when the fraction is positive and there are two or more groups, never all) go
    to evaluation. Items keep their order. Grouping by page keeps every question about one page on
    the same side, so evaluation never scores a page seen in training.

    Args:
        items: the pool.
        eval_fraction: share of groups held out, in [0, 1).
        seed: permutation seed (``train.seed``).
        group: item -> group key (the item's id when every item is its own group).
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise AetnetError(f"data.eval_fraction must be in [0, 1), got {eval_fraction}")
    keys = sorted({group(item) for item in items})
    n_eval = int(round(eval_fraction * len(keys)))
    if eval_fraction > 0 and len(keys) >= 2:
        n_eval = min(max(n_eval, 1), len(keys) - 1)
    order = np.random.default_rng(seed).permutation(len(keys))
    held = {keys[int(i)] for i in order[:n_eval]}
    return [x for x in items if group(x) not in held], [x for x in items if group(x) in held]


def _by_id(x: Any) -> str:
    return str(x.id)


class Splits(dict):
    """``{"train": [...], "eval": [...]}`` that also says which split (or carve-out) is evaluated.

    Attributes:
        eval_split: ``"test"``, ``"validation"``, ``"carved from train (20%)"``, ...; recorded as
            ``eval_split`` in ``metrics.json``.
    """

    def __init__(self, *args, eval_split: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_split = eval_split


#: Split names read as the dataset's own validation split (used for selection during training).
VALIDATION_NAMES = ("validation", "val", "dev")


def map_splits(
    splits: dict[str, list[Any]],
    eval_names: Sequence[str],
    eval_fraction: float,
    seed: int,
    where: str,
    group: Callable[[Any], str] = _by_id,
) -> Splits:
    """Map a reader's split names onto the runner's ``{"train", "eval"}``, never evaluating on
    what is trained on.

    A dataset with a single non-empty split, WHATEVER its name (``train``, or an evaluation name
    such as DocVQA's ``val`` alone or an RVL-CDIP ``test.txt`` alone), is carved with
    :func:`carve_out_eval`: a deterministic, group-wise share (no document/page on both sides).
    With several splits, ``train`` is the split named ``train`` and ``eval`` the first non-empty
    split of ``eval_names`` (for example ``("test", "dev")``), or, without one, a share carved out
    of ``train``; then the first other split named in :data:`VALIDATION_NAMES` is returned as
    ``validation`` (scored during training when the run validates). Other splits are not used (logged).

    Args:
        splits: reader split name -> items (a :class:`Splits` whose ``eval_split`` is set, as a
            reader that carved its own evaluation share returns, keeps that description).
        eval_names: evaluation split names, in order of preference.
        eval_fraction: share of groups carved out when needed (``data.eval_fraction``).
        seed: carve-out seed (``train.seed``).
        where: the dataset, for messages.
        group: item -> group key (document or page id).

    Raises:
        AetnetError: several splits and none named ``train``.
    """
    names = [n for n in splits if splits[n]]
    eval_name = next((n for n in eval_names if splits.get(n)), None)
    validation = None
    if len(names) == 1 or (names and "train" in names and eval_name is None):
        source = names[0] if len(names) == 1 else "train"
        train, evaluation = carve_out_eval(list(splits[source]), eval_fraction, seed, group)
        description = f"carved from {source} ({eval_fraction:.0%})"
        logger.info("%s: eval = %d carved out of %d in split '%s' by %s (data.eval_fraction=%s, seed %d)",
                    where, len(evaluation), len(train) + len(evaluation), source,
                    "document" if group is _by_id else "page/document", eval_fraction, seed)
        if not evaluation:
            logger.warning("%s: nothing to evaluate on: split '%s' has %d group(s) and data.eval_fraction=%s; "
                           "add an evaluation split or more documents", where, source,
                           len({group(x) for x in train}), eval_fraction)
    elif "train" in names:
        train, evaluation = list(splits["train"]), list(splits[eval_name])
        description = getattr(splits, "eval_split", None) or eval_name
        logger.info("%s: train = 'train' (%d), eval = '%s' (%d)", where, len(train), eval_name, len(evaluation))
        val_name = next((n for n in VALIDATION_NAMES if n != eval_name and splits.get(n)), None)
        if val_name is not None:
            validation = list(splits[val_name])
        unused = [n for n in names if n not in ("train", eval_name, val_name)]
        if unused:
            logger.info("%s: split(s) %s not used", where, unused)
    elif names:
        raise AetnetError(
            f"{where}: splits {names} include none named 'train'; name the training split 'train' "
            f"(evaluation is read from {' / '.join(eval_names)})"
        )
    else:
        train, evaluation, description = [], [], "none"
    out = Splits({"train": train, "eval": evaluation}, eval_split=description)
    if validation is not None:
        out["validation"] = validation
    return out
