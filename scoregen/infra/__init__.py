"""Infrastructure without domain, used by every stage: name registries
(:mod:`~scoregen.infra.registry`), broadcasting of time coefficients
(:mod:`~scoregen.infra.shape`), ``torch.distributed`` under ``torchrun``
(:mod:`~scoregen.infra.distributed`) and PNG plots of samples (:mod:`~scoregen.infra.plotting`).
Nothing here knows what an SDE or a sampler is.
"""
