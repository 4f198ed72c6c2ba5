"""Someone else's network as a scoregen model: diffusers UNets, EDM / k-diffusion denoisers,
and any ``module:function`` that builds a model.

Every adapter returns an object with the :class:`scoregen.models.prediction.Model` protocol (a
``prediction`` type, the ``sde`` the network was trained on, ``model(x, t)``), so every
sampler, the likelihood and the comparison run on it unchanged:

- :mod:`~scoregen.adapters.diffusers_unet`: a diffusers ``UNet2DModel`` (or any module with
  its call ``net(x, timestep).sample``) plus its scheduler config is an eps / v / x0 model
  on the discrete ``ddpm`` process with the scheduler's betas (diffusers' timestep ``k`` is
  scoregen time ``(k + 1) / N``); :func:`load_diffusers` reads a local ``save_pretrained``
  folder.
- :mod:`~scoregen.adapters.edm`: a denoiser ``D(x, sigma)`` in the variance-exploding form
  of Karras et al. 2022 (k-diffusion's model convention) is an x0 model on any SDE through
  ``x0_hat(x, t) = D(x / alpha(t), sigma(t) / alpha(t))``; :func:`edm_precond` builds ``D``
  from a raw network and ``sigma_data`` (EDM's preconditioning).
- :mod:`~scoregen.adapters.user`: ``"pkg.mod:make_model"`` (or ``"path/file.py:fn"``)
  imports the module and calls the function; the CLI's ``--model`` uses it.

The libraries are optional: nothing of diffusers is imported until a diffusers folder is
loaded.
"""

from __future__ import annotations

from scoregen.adapters.diffusers_unet import (
    DiffusersModel,
    betas_from_scheduler_config,
    ddpm_sde_from_scheduler_config,
    load_diffusers,
)
from scoregen.adapters.edm import EDMDenoiserModel, edm_precond
from scoregen.adapters.user import ModelSpecError, load_model_spec

__all__ = [
    "DiffusersModel",
    "EDMDenoiserModel",
    "ModelSpecError",
    "betas_from_scheduler_config",
    "ddpm_sde_from_scheduler_config",
    "edm_precond",
    "load_diffusers",
    "load_model_spec",
]
