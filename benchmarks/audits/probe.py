"""Linear-probe audit (docs/SPEC.md section 5): can a classifier on the *frozen image embeddings* still
recognise the forgotten classes?

One prototype classifier serves both geometries through the geometry interface: class ``k`` has a
prototype ``p_k`` — a ``geoopt.ManifoldParameter`` on a frozen copy of the model's manifold (the
Lorentz hyperboloid of the model's curvature ``c``, or flat ``R^d``) — and a bias ``b_k``, and

    logit_k(u) = s · geometry.csimilarity(u, p_k) + b_k,

with a learnable scale ``s``. For MERU this is a distance classifier (``-s · d(u, p_k)``), for CLIP
a linear classifier (``s · u·p_k``, CLIP's embeddings being unit vectors). Prototypes start at the
class means put back on the manifold (``projx``) and are trained with geoopt's Riemannian Adam on
the train-split embeddings of ALL classes, full batch, for a fixed number of epochs.

High probe accuracy on forget images together with low zero-shot accuracy means the concept was
only disconnected from the text side, not removed from the image representation."""

from __future__ import annotations

import copy
import math

import geoopt
import torch
from torch import nn

from models.evaluation import macro_accuracy
from models.training import TrainingLoop

from .context import AuditContext, Embedded
from .registry import Column, register_audit


class PrototypeProbe(nn.Module):
    """Prototype classifier on a (frozen) manifold: ``s · csimilarity(u, p_k) + b_k``."""

    def __init__(self, geometry, prototypes: torch.Tensor, scale: float = 10.0):
        super().__init__()
        self.geometry = geometry
        self.prototypes = geoopt.ManifoldParameter(geometry.projx(prototypes.detach().clone()), manifold=geometry)
        self.bias = nn.Parameter(torch.zeros(len(prototypes), dtype=prototypes.dtype, device=prototypes.device))
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale), dtype=prototypes.dtype, device=prototypes.device))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.log_scale.exp() * self.geometry.csimilarity(embeddings, self.prototypes) + self.bias


def frozen_geometry(geometry):
    """A copy of ``geometry`` whose parameters (a learnable curvature) are constants: the probe
    must live on the model's manifold without training (or back-propagating into) its curvature."""
    frozen = copy.deepcopy(geometry)
    for parameter in frozen.parameters():
        parameter.requires_grad_(False)
    return frozen


def class_means(embeddings: torch.Tensor, targets: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Mean embedding per class (the mean of all embeddings for a class without examples)."""
    sums = torch.zeros(n_classes, embeddings.shape[1], dtype=embeddings.dtype, device=embeddings.device)
    sums.index_add_(0, targets, embeddings)
    counts = torch.bincount(targets, minlength=n_classes).to(embeddings.dtype).unsqueeze(1)
    overall = embeddings.mean(dim=0, keepdim=True).expand_as(sums)
    return torch.where(counts > 0, sums / counts.clamp_min(1), overall)


def train_probe(geometry, embeddings: torch.Tensor, targets: torch.Tensor, n_classes: int, *,
                epochs: int = 150, lr: float = 0.05) -> PrototypeProbe:
    """Fit a :class:`PrototypeProbe` to ``(embeddings, targets)`` (full batch, cross-entropy). No
    randomness: it starts from the class means, so the result depends on the data alone."""
    embeddings = embeddings.detach().float()
    targets = targets.to(embeddings.device)
    probe = PrototypeProbe(frozen_geometry(geometry), class_means(embeddings, targets, n_classes))
    # Full precision (the embeddings are float32 already) and no guard, as an audit reports what it finds.
    loop = TrainingLoop(probe.parameters(), lr=lr, device=embeddings.device, mixed_precision=False,
                        check_finite=False, progress=False)
    with torch.enable_grad():
        for _ in range(epochs):
            loop.step(lambda: {"loss": nn.functional.cross_entropy(probe(embeddings), targets)})
    return probe.eval()


@register_audit("probe", columns=(Column("probe forget", "probe_forget_accuracy", "pct"),))
def audit_probe(model, context: AuditContext, embedded: Embedded | None = None, *,
                epochs: int = 150, lr: float = 0.05) -> dict:
    """``probe_forget_accuracy`` (forget-test images, macro over forgotten classes) and
    ``probe_retain_accuracy`` (retain-test images, macro over retain classes) of a prototype
    probe trained on the forget-train and retain-train image embeddings (all leaf classes)."""
    embedded = embedded or context.embed(model)
    train_x = torch.cat([embedded.images["forget_train"], embedded.images["retain_train"]])
    train_y = torch.cat([embedded.targets["forget_train"], embedded.targets["retain_train"]])
    probe = train_probe(model.geometry, train_x, train_y, len(context.data.classes), epochs=epochs, lr=lr)
    results = {}
    with torch.no_grad():
        for key, group, classes in (("probe_forget_accuracy", "forget_test", context.forget_classes),
                                    ("probe_retain_accuracy", "retain_test", context.retain_classes)):
            images = embedded.images[group]
            predictions = probe(images.float()).argmax(dim=1).cpu() if len(images) else torch.zeros(0, dtype=torch.long)
            results[key] = macro_accuracy(predictions, embedded.targets[group].cpu(), classes)
        results["probe_train_accuracy"] = float((probe(train_x.float()).argmax(dim=1) == train_y).float().mean())
    return results
