"""The validation split: what a run scores during training to keep its best model and stop early.

The test split is never used for selection unless the user asks for it (``data.select_on=test``, the
reference LayoutLMv3 scripts' practice). Otherwise validation is the dataset's own
``validation``/``val``/``dev`` split, or a deterministic, document-grouped share of the training pool
(``data.val_fraction``): every window and every question of one page lands on the same side.
"""

from __future__ import annotations

import logging
from typing import Any

from aetnet.config.settings import RunConfig

logger = logging.getLogger(__name__)


def split_validation(cfg: RunConfig, task, splits: dict[str, list[Any]]) -> tuple[list, list, str | None]:
    """(training pool, validation examples, name of the selection split) for a run.

    Args:
        cfg: run configuration (``train.eval_strategy``, ``data.select_on``, ``data.val_fraction``,
            ``train.seed``).
        task: the run's task (its pages group the examples).
        splits: the task's splits: ``train``, ``eval`` and, when the dataset has one, ``validation``.

    Returns:
        The training pool (without the carved validation documents), the validation examples (empty
        when the run does not validate) and how they were chosen (``"validation"``,
        ``"carved from train (10%)"``, ``"test (data.select_on=test)"``; ``None`` without validation).
    """
    from aetnet.data.documents.splits import carve_out_eval

    train = splits.get("train", [])  # a DocumentStream stays one unless validation is carved out of it
    if cfg.train.eval_strategy == "no":
        return train, [], None
    if cfg.data.select_on == "test":
        logger.warning("data.select_on=test: the best checkpoint and early stopping are chosen on the test "
                       "split, so its score is optimistic (the reference LayoutLMv3 scripts' practice)")
        return train, list(splits.get("eval", [])), "test (data.select_on=test)"
    if splits.get("validation"):
        return train, list(splits["validation"]), "validation"
    train, validation = carve_out_eval(list(train), cfg.data.val_fraction, cfg.train.seed, lambda ex: page_id(task, ex))
    share = f"{100 * cfg.data.val_fraction:g}%"
    logger.info("validation: %d of %d training examples carved out by page (data.val_fraction=%s)",
                len(validation), len(train) + len(validation), cfg.data.val_fraction)
    return train, validation, f"carved from train ({share})"


def page_id(task, example: Any) -> str:
    """The id of the page behind ``example`` (a document, or a question's page)."""
    return str(task.documents([example])[0].id)
