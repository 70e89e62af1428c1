"""Strategy ``prompt``: prompt tuning of LayoutLMv3 with a frozen backbone.

Design. N learnable vectors occupy real sequence positions 1..N, right after ``<s>``:

* the caller's ``input_ids`` (B, L) become (B, L+N) with a placeholder id at the prompt positions;
  their word embeddings are looked up as usual and the N placeholder rows are replaced by the
  learned prompt vectors, which enter the model as ``inputs_embeds``;
* ``position_ids`` are computed from the extended ids with LayoutLMv3's own rule (padding-aware),
  and passed explicitly: with ``inputs_embeds`` alone LayoutLMv3 would number padding as text;
* ``bbox`` gets N boxes ``[0, 0, 0, 0]``, ``attention_mask`` N ones, token ``labels`` N ``-100``
  and QA answer positions > 0 shift by N (0, "no answer here", stays on ``<s>``);
* the token logits (or QA start/end logits) of the prompt positions are removed, so every output
  lines up with the caller's input positions.

The rest of the embedding path (position, 2-D layout and token-type embeddings, LayerNorm) is
LayoutLMv3's, unchanged. Only the prompt vectors and the task head train: the word-embedding matrix
stays frozen (a separate parameter avoids AdamW's weight decay touching frozen vocabulary rows, which
a "new vocabulary rows" design would have to work around). Prompts start as copies of randomly
chosen vocabulary embeddings.

Positions: the prompts use N of the base's text positions, so ``data.max_length + N`` must fit
(``max_position_embeddings - pad_token_id - 1``: 512 for LayoutLMv3-base); ``recipes/funsd/prompt.yaml``
uses ``data.max_length: 492`` for 20 prompts.

Model folder: the ``LayoutLMv3For...`` weights (``config.json``, ``model.safetensors``, the frozen
backbone and the trained head) plus ``prompts.safetensors`` holding ``prompt_embeddings`` (N, H).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aetnet.bases import detect_family
from aetnet.config.settings import RunConfig
from aetnet.errors import AetnetError
from aetnet.models.heads import head_class
from aetnet.models.task_model import TaskModel
from aetnet.strategies.base import Strategy, load_task_model

logger = logging.getLogger(__name__)

PROMPTS_FILE = "prompts.safetensors"
IGNORE_INDEX = -100


def max_text_tokens(config) -> int:
    """Longest text sequence (prompts included) the base's position table can number."""
    return config.max_position_embeddings - config.pad_token_id - 1


class PromptTuningModel(TaskModel, nn.Module):
    """A ``LayoutLMv3For...`` model with N learned prompt vectors after ``<s>``.

    Args:
        model: the HF task model (its backbone is frozen here; the head keeps ``requires_grad``).
        kind: ``token``, ``sequence`` or ``qa``.
        num_prompts: N, used when ``prompts`` is not given (then initialised from random vocabulary rows).
        prompts: (N, H) initial prompt vectors (loading a saved model).
    """

    def __init__(self, model: nn.Module, kind: str, num_prompts: int | None = None,
                 prompts: torch.Tensor | None = None):
        super().__init__()
        self.model = model
        self.kind = kind
        self.config = model.config
        embeddings = model.base_model.embeddings.word_embeddings
        if prompts is None:
            if not num_prompts or num_prompts < 1:
                raise AetnetError(f"prompt.num_prompts={num_prompts} must be a positive integer")
            pad = self.config.pad_token_id
            # Random ordinary vocabulary rows: a sensible scale, and seeded by the run's set_seed.
            choices = torch.tensor([i for i in range(embeddings.num_embeddings) if i != pad])
            picked = (choices[torch.randperm(len(choices))[:num_prompts]] if num_prompts <= len(choices)
                      else choices[torch.randint(len(choices), (num_prompts,))])
            prompts = embeddings.weight[picked].detach().clone()
        self.prompt_embeddings = nn.Parameter(prompts.detach().clone().float())
        pad = self.config.pad_token_id
        bos = getattr(self.config, "bos_token_id", None)
        # Any non-padding id works: its embedding is replaced, it only makes the position count go on.
        self.placeholder_id = bos if bos is not None and bos != pad else (0 if pad != 0 else 1)
        for param in model.base_model.parameters():  # the backbone: LayoutLMv3's or LiLT's
            param.requires_grad = False

    @property
    def num_prompts(self) -> int:
        return self.prompt_embeddings.shape[0]

    def extend_inputs(
        self,
        input_ids: torch.Tensor,
        bbox: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Insert the N prompt positions after position 0.

        Args:
            input_ids: (B, L) token ids, ``<s>`` first, padding at the end.
            bbox: (B, L, 4) boxes on the 0-1000 scale (zeros when ``None``).
            attention_mask: (B, L) 1 for real tokens (ones when ``None``).
            labels: (B, L) token labels, or (B,) document labels (returned unchanged).

        Returns:
            ``input_ids`` (B, L+N) with the placeholder id at 1..N, ``bbox`` (B, L+N, 4) with zero
            boxes there, ``attention_mask`` (B, L+N) with ones, ``position_ids`` (B, L+N) by
            LayoutLMv3's padding-aware rule and, when given, ``labels`` with -100 there.
        """
        b, n = input_ids.shape[0], self.num_prompts
        if input_ids.shape[1] + n > max_text_tokens(self.config):
            raise AetnetError(
                f"{input_ids.shape[1]} tokens plus {n} prompts exceed the {max_text_tokens(self.config)} "
                f"text positions of the base; lower data.max_length to {max_text_tokens(self.config) - n}"
            )
        if bbox is None:
            bbox = input_ids.new_zeros((*input_ids.shape, 4))
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)

        def insert(t: torch.Tensor, value: int) -> torch.Tensor:
            filler = t.new_full((b, n, *t.shape[2:]), value)
            return torch.cat([t[:, :1], filler, t[:, 1:]], dim=1)

        ids = insert(input_ids, self.placeholder_id)
        text = self.model.base_model.embeddings
        out = {
            "input_ids": ids,
            "bbox": insert(bbox, 0),
            "attention_mask": insert(attention_mask, 1),
            "position_ids": text.create_position_ids_from_input_ids(ids, text.padding_idx),
        }
        if labels is not None:
            out["labels"] = insert(labels, IGNORE_INDEX) if labels.dim() == 2 else labels
        return out

    def forward(
        self,
        input_ids: torch.Tensor,
        bbox: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        **entity_inputs: torch.Tensor,
    ):
        """Run the task model with the prompts; outputs align with ``input_ids`` (B, L).

        ``entity_inputs`` (relation models: ``entity_positions``, ``entity_labels``,
        ``relation_labels``) pass through, with the entity positions moved past the N prompts.

        Returns:
            The HF output with ``loss`` (when labels are given) and ``logits`` (B, L, C) for token
            tasks, (B, C) for documents, or ``start_logits``/``end_logits`` (B, L+V) for QA (the
            LayoutLMv3 QA head also scores the V visual tokens, which follow the text).
        """
        n = self.num_prompts
        ext = self.extend_inputs(input_ids, bbox, attention_mask, labels)
        words = self.model.base_model.embeddings.word_embeddings(ext["input_ids"])
        prompts = self.prompt_embeddings.to(words.dtype).unsqueeze(0).expand(words.shape[0], -1, -1)
        inputs_embeds = torch.cat([words[:, :1], prompts, words[:, 1 + n:]], dim=1)
        kwargs: dict[str, Any] = {}
        if "labels" in ext:
            kwargs["labels"] = ext["labels"]
        if start_positions is not None:
            # Position 0 means "no answer in this window" and stays on <s>; real spans move by N.
            kwargs["start_positions"] = torch.where(start_positions > 0, start_positions + n, start_positions)
            kwargs["end_positions"] = torch.where(end_positions > 0, end_positions + n, end_positions)
        if pixel_values is not None:  # a base without an image stream (LiLT) gets none
            kwargs["pixel_values"] = pixel_values
        kwargs.update(entity_inputs)
        if "entity_positions" in kwargs:  # first tokens of entities are never <s>: all move by N
            kwargs["entity_positions"] = kwargs["entity_positions"] + n
        out = self.model(
            inputs_embeds=inputs_embeds,
            position_ids=ext["position_ids"],
            bbox=ext["bbox"],
            attention_mask=ext["attention_mask"],
            **kwargs,
        )
        fields = dict(out)
        if self.kind in ("token", "qa"):
            # Per-position outputs (QA ones run on past the text into the visual tokens): drop 1..N.
            for key in ("logits", "start_logits", "end_logits"):
                if fields.get(key) is not None:
                    fields[key] = torch.cat([fields[key][:, :1], fields[key][:, 1 + n:]], dim=1)
        return type(out)(**fields)

    def save_inference(self, folder: str | Path) -> None:
        """Write the task model (``save_pretrained``) and ``prompts.safetensors`` into ``folder``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        self.model.save_pretrained(folder)
        save_file({"prompt_embeddings": self.prompt_embeddings.detach().cpu().contiguous()},
                  str(folder / PROMPTS_FILE), metadata={"format": "pt"})


class PromptStrategy(Strategy):
    """Prompt tuning: ``prompt.num_prompts`` vectors after ``<s>``; backbone frozen, head trained."""

    name = "prompt"

    def check_config(self, cfg: RunConfig, config=None) -> None:
        """Fail early when the prompts cannot fit beside ``data.max_length`` tokens.

        Args:
            cfg: the run configuration.
            config: the base's ``LayoutLMv3Config`` (default: LayoutLMv3's 514 positions, pad id 1).
        """
        n = cfg.prompt.num_prompts
        if n < 1:
            raise AetnetError(f"prompt.num_prompts={n} must be a positive integer (for example 20)")
        limit = max_text_tokens(config) if config is not None else 512
        if cfg.data.max_length + n > limit:
            raise AetnetError(
                f"data.max_length={cfg.data.max_length} plus prompt.num_prompts={n} exceed the {limit} "
                f"text positions of the base; set data.max_length={limit - n} (and a smaller data.stride)"
            )

    def build(self, task, cfg: RunConfig, paths, labels: list[str] | None, processor) -> PromptTuningModel:
        model = load_task_model(task.kind, paths.layoutlmv3, labels, cfg)
        self.check_config(cfg, model.config)
        wrapped = PromptTuningModel(model, task.kind, num_prompts=cfg.prompt.num_prompts)
        logger.info("prompt: %d prompt vectors of size %d", wrapped.num_prompts,
                    wrapped.prompt_embeddings.shape[1])
        return wrapped

    def load(self, path: str | Path, meta: dict[str, Any]) -> PromptTuningModel:
        """Rebuild the wrapper from a folder written by :meth:`PromptTuningModel.save_inference`."""
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / PROMPTS_FILE).is_file():
            raise AetnetError(f"{path}: not a prompt-tuning model folder ({PROMPTS_FILE} is missing)")
        model = head_class(meta["kind"], detect_family(str(path))).from_pretrained(str(path))
        prompts = load_file(str(path / PROMPTS_FILE))["prompt_embeddings"]
        return PromptTuningModel(model, meta["kind"], prompts=prompts)
