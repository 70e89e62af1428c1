"""What the runner, trainer, model I/O and export may ask of a task model: :class:`TaskModel`.

A strategy's model is either a plain ``LayoutLMv3For...`` model (strategies ``full`` and ``head``) or
one of aetnet's own classes (AETNet, LoRA, prompt tuning), which derive from :class:`TaskModel` and
override the abilities they have. Orchestration code never probes a model for a method: it calls
:func:`abilities` and gets the model itself, or for a plain model the defaults below.

Every ability, who calls it, and its default:

=========================  ==============================================  =================================
ability                    called by                                       default
=========================  ==============================================  =================================
``save_inference``         ``aetnet.inference.modelio.save_model``         ``save_pretrained(folder)``
``training_only_numel``    ``aetnet.strategies.base.parameter_counts``     ``(0, 0)``
``on_train_data``          the runner, once the training set is known      nothing
``optimizer_param_groups`` ``aetnet.train.trainer.build_trainer``          ``None``: the Trainer's AdamW
``uses_word_boxes``        ``build_trainer`` (the collator's ``word_bbox``)  ``False``
``merged_strategy``        ``aetnet.export.folder.merge_adapters``         ``None``: no adapters to merge
``merge_and_unload``       ``merge_adapters`` (``export --merge-lora``)    raises :class:`AetnetError`
=========================  ==============================================  =================================
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from aetnet.errors import AetnetError


class TaskModel:
    """The optional abilities of a task model, each with the behaviour of a plain HF model.

    A mixin: aetnet's model classes list it among their bases (``class AETNetModel(TaskModel,
    nn.Module)``) and override what they do differently.
    """

    #: Whether training batches carry ``word_bbox`` (one box per token, its word's; AET's PITA with
    #: ``aet.pita_boxes=word``).
    uses_word_boxes: bool = False
    #: The strategy of the model :meth:`merge_and_unload` returns (``full`` for a LoRA model, ``aet``
    #: for aet-lora); ``None`` when the model has no adapters to merge.
    merged_strategy: str | None = None

    def save_inference(self, folder: str | Path) -> None:
        """Write what prediction needs into ``folder`` (the runner adds the processor and ``aetnet.json``).

        Default: ``save_pretrained(folder)`` (safetensors weights and ``config.json``).
        """
        self.save_pretrained(folder)

    def training_only_numel(self) -> tuple[int, int]:
        """``(parameters, buffer values)`` that only training needs and an export leaves out (AET:
        momentum copies, projection heads, temperature; the queues' entries). Default ``(0, 0)``."""
        return 0, 0

    def on_train_data(self, num_examples: int) -> None:
        """Called once before training with the number of training items (AET warns when its queue is
        longer than the training set). Default: nothing."""

    def optimizer_param_groups(self, weight_decay: float) -> list[dict] | None:
        """AdamW parameter groups for the trainer, or ``None`` for the Trainer's own (default)."""
        return None

    def merge_and_unload(self) -> nn.Module:
        """Fold adapters into the weights and return the merged model (see :attr:`merged_strategy`).

        Raises:
            AetnetError: the model has no adapters (the default).
        """
        raise AetnetError(f"{type(self).__name__} has no LoRA adapters to merge")


class PlainModel(TaskModel):
    """A plain ``LayoutLMv3For...`` model seen through :class:`TaskModel`: every default."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def save_inference(self, folder: str | Path) -> None:
        self.model.save_pretrained(folder)

    def merge_and_unload(self) -> nn.Module:
        raise AetnetError(f"{type(self.model).__name__} has no LoRA adapters to merge")


class PlainPeftModel(PlainModel):
    """A peft ``PeftModel`` made elsewhere (``get_peft_model``, ``PeftModel.from_pretrained``): the defaults,
    and peft's ``merge_and_unload``, which returns the plain model with the adapters folded in."""

    merged_strategy = "full"

    def merge_and_unload(self) -> nn.Module:
        return self.model.merge_and_unload()


def abilities(model: nn.Module) -> TaskModel:
    """``model`` itself when it is a :class:`TaskModel`, else the defaults of a plain (or peft) model."""
    from peft import PeftModel

    if isinstance(model, TaskModel):
        return model
    return PlainPeftModel(model) if isinstance(model, PeftModel) else PlainModel(model)
