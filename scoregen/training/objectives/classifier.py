"""Cross-entropy of a noise-conditional classifier on noised inputs of any SDE.

The classifier of classifier guidance must know ``p_t(y | x_t)`` at every noise level
(Song et al. 2021, app. I.1; Dhariwal & Nichol 2021, sec. 4)::

    L = E_{t ~ U(t_min, T)} E_{(x0, y), eps} [ -log softmax(f(x_t, t))_y ],
        x_t = perturb(x0, t, eps)   (alpha(t) x0 + sigma(t) eps for the scalar kernel).

Its minimiser is the exact noisy classifier: ``E[-log q(y | x_t)]`` is smallest for ``q =
p_t(y | x_t)`` at each ``t`` (Gibbs' inequality). The model is a
:class:`~scoregen.models.classifier.NoisyClassifier` (a network of ``kind="classifier"``), the
labels are the batch's (a classifier run uses no label dropout), ``t`` comes from each
example's own uniform and ``x_t`` from its noise, as for the score objectives.
``scoregen train configs/digits_classifier.yaml`` trains one; ``scoregen sample RUN
--classifier CLF_RUN --class 3 --guidance 2`` guides with it.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from scoregen.sde.base import SDE
from scoregen.training.batches import Batch
from scoregen.training.objectives.base import Objective, register


@register("classifier", model="classifier")
class NoisyCrossEntropy(Objective):
    """Cross-entropy of a noise-conditional classifier on x_t, t uniform on [t_min, T]."""

    requires = frozenset()  # the SDE's own perturb: any kernel

    def __init__(self, sde: SDE) -> None:
        super().__init__(sde)

    def loss(self, model, batch: Batch) -> Tensor:
        if batch.cond is None:
            raise ValueError("the classifier objective needs class labels: train it on a "
                             "labeled dataset with model.num_classes set")
        sde, x0 = self.sde, batch.x0
        t = (sde.t_min + (sde.T - sde.t_min) * batch.u).to(x0)
        x_t = sde.data_from_state(sde.perturb(x0, t, batch.eps))
        return F.cross_entropy(model(x_t, t).float(), batch.cond.to(torch.int64))


__all__ = ["NoisyCrossEntropy"]
