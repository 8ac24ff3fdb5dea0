"""Relearning attack (docs/SPEC.md section 5): does the concept come back after a few fine-tuning steps on
a handful of its pairs?

On a deep copy of the model (the audited model is never touched), the attack takes ``n_forget``
forget-train pairs with their TRUE captions and as many retain-train pairs (seeded choice), and
runs ``steps`` full-batch steps of geoopt's Riemannian Adam on the model's own pretraining loss
(MERU: contrastive + entailment; CLIP: contrastive). It reports zero-shot accuracy afterwards.
A concept that was truly removed needs about as much data to relearn as one never seen; one that
was merely hidden (disconnected, suppressed) snaps back.

The defaults (16 + 16 pairs, 25 steps, lr 1e-4 — the unlearning trainer's own step size) were
chosen on the tiny shapes models (measured, forgetting "ring" with 60 steps of AC, forget accuracy
0.97 -> 0.00): the attack brings it back to 0.83 on MERU (0.57 on CLIP, from 0.92 -> 0.00) while
retain accuracy stays where unlearning left it (0.33 -> 0.40; CLIP 0.28 -> 0.29), and it leaves the
un-unlearned models' forget accuracy almost unchanged (MERU 0.97 -> 0.95). Larger steps (lr 1e-3)
overfit the 32 pairs and erode retain accuracy (MERU 0.46 -> 0.29 on the original model)."""

from __future__ import annotations

import copy

import numpy as np
import torch

from models.training import TrainingLoop

from .context import AuditContext, Embedded, embed_groups
from .registry import Column, register_audit
from .zero_shot import leaf_accuracies


def attack_pairs(context: AuditContext, n_forget: int, seed: int) -> np.ndarray:
    """The attacker's pairs: ``n_forget`` forget-train pairs and as many retain-train pairs."""
    rng = np.random.default_rng([seed, 300])
    forget = rng.choice(context.forget_train, size=min(n_forget, len(context.forget_train)), replace=False)
    retain = rng.choice(context.retain_train, size=min(len(forget), len(context.retain_train)), replace=False)
    return np.concatenate([forget, retain])


def relearn(model, context: AuditContext, *, steps: int = 25, n_forget: int = 16, lr: float = 1e-4,
            seed: int = 0):
    """The attacked copy of ``model`` and the per-step losses (``model`` itself is unchanged)."""
    attacked = copy.deepcopy(model)
    device = next(attacked.parameters()).device
    rows = attack_pairs(context, n_forget, seed)
    images = context.data.images(rows).to(device)
    tokens = context.data.tokens[torch.from_numpy(rows)].to(device)
    # No non-finite guard: a diverging attack is a result (its NaN loss is reported), not an error.
    loop = TrainingLoop(attacked.parameters(), lr=lr, device=device, check_finite=False, progress=False)
    losses = []
    cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices), torch.enable_grad():
        torch.manual_seed(seed)
        attacked.train_with_frozen_statistics()
        for _ in range(steps):
            losses.append(loop.step(lambda: attacked.pretraining_loss(images, tokens))["loss"])
    attacked.eval()
    return attacked, losses


@register_audit("relearn", columns=(Column("relearn forget", "relearn_forget_accuracy", "pct"),))
def audit_relearn(model, context: AuditContext, embedded: Embedded | None = None, *, steps: int = 25,
                  n_forget: int = 16, lr: float = 1e-4) -> dict:
    """``relearn_forget_accuracy`` / ``relearn_retain_accuracy``: zero-shot accuracies (as in
    :func:`~benchmarks.audits.zero_shot.audit_zero_shot`) of the model after the attack, plus the
    attack's first and last loss. Deterministic given ``context.seed`` on CPU. ``embedded`` is
    unused (the attacked model embeds the test images itself)."""
    if len(context.forget_train) == 0 or steps <= 0:
        attacked, losses = model, []
    else:
        attacked, losses = relearn(model, context, steps=steps, n_forget=n_forget, lr=lr, seed=context.seed)
    accuracies = leaf_accuracies(attacked, context,
                                 embed_groups(attacked, context, ("forget_test", "retain_test"), texts=False))
    return {
        "relearn_forget_accuracy": accuracies["forget_accuracy"],
        "relearn_retain_accuracy": accuracies["retain_accuracy"],
        "relearn_loss": {"first": losses[0] if losses else float("nan"),
                         "last": losses[-1] if losses else float("nan")},
    }
