"""The AET objective (AETNet, alignment-enriched tuning) in one package; the method: ``shared/spec/AETNET.md``.

Map, in the order a training step runs through it:

* ``strategy.py``: the ``aet`` strategy. Builds the model, adds the augmented image I+ to every training
  item, and its ``after_optimizer_step`` runs the EMA step (the trainer calls it right after every
  optimizer step: :meth:`aetnet.train.trainer.AetnetTrainer.after_optimizer_step`).
* ``model.py``: :class:`~aetnet.strategies.aet.model.AETNetModel`, LayoutLMv3 + the two aligners; its
  ``forward`` fuses the aligned features, adds the weighted alignment losses to the task loss, and
  ``momentum_update`` is the EMA step hook. Saves and loads the inference model.
* ``aligners.py``: the ViT image aligner, the RoBERTa text aligner and the projection heads.
* ``fusion.py``: the fusion point, where the aligner outputs are added to LayoutLMv3's text and visual
  embeddings (forward hooks for one call).
* ``builder.py``: :class:`~aetnet.strategies.aet.builder.MomentumContrast`, the one owner (as MoCo's
  ``builder.py``) of the momentum encoders (EMA copies of both aligners and projection heads), the
  feature queues and the temperature: ``momentum_update()``, ``momentum_features()``, ``enqueue()``.
  The model holds it as ``alignment``.
* ``momentum.py``: the EMA helper (one fused ``torch._foreach_lerp_`` over (online, momentum) pairs).
* ``queue.py``: the feature queue (a ring buffer, gathered across ranks).
* ``alignment.py``: the four losses of one batch, then the enqueue.
* ``losses.py``: DITC, IMC and GLITC; ``pita.py``: PITA (pure functions of tensors).

``aetnet.strategies.aet_lora`` is the same objective with LoRA adapters.
"""
