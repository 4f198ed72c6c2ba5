"""The adaptive exponential integrator ``dpm_solver++_adaptive``: its endpoint error falls with
the tolerance against an independent high-accuracy solve, NFE is counted as the docstring
says (a rejection re-uses the step's first evaluation), and bad options are refused."""

from __future__ import annotations

import pytest
import torch
from _oracle import MIXTURE, pf_ode_reference

import scoregen
from scoregen import sde as sde_lib

F64 = torch.float64


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
@pytest.mark.parametrize("order", [2, 3])
def test_error_falls_with_the_tolerance(sde_name, order):
    sde, x_T, ref = pf_ode_reference(sde_name)  # dopri5 at 1e-11, to t_min
    ts = torch.tensor([sde.T, sde.t_min], dtype=F64)
    errors, nfes = [], []
    for tol in (1e-2, 1e-3, 1e-4):
        out = scoregen.sample(MIXTURE.model(sde), sde, x_T, "dpm_solver++_adaptive", None,
                              ts=ts, rtol=tol, order=order)
        errors.append(float((out.x - ref).abs().max()))
        nfes.append(out.nfe)
    assert errors[0] > errors[1] > errors[2], errors
    assert nfes[0] < nfes[1] < nfes[2], nfes
    assert errors[2] < 2e-3, errors  # global error within a small multiple of the tolerances


def test_nfe_and_steps_are_reported():
    sde = sde_lib.get("vp")
    ts = torch.tensor([sde.T, sde.t_min, 0.0], dtype=F64)
    res = scoregen.sample(MIXTURE.model(sde), sde, (64, 2), "dpm_solver++_adaptive", None,
                          ts=ts, rtol=1e-3, dtype=F64)
    info, used = res.info, res.info["ts_used"]
    assert used[0] == sde.T and used[-1] == sde.t_min and (used[1:] < used[:-1]).all()
    assert len(used) == info["accepted"] + 1
    assert res.nfe == 3 * info["accepted"] + 2 * info["rejected"] + 1 == info["solver_nfe"] + 1
    assert torch.isfinite(res.x).all()


@pytest.mark.parametrize(("opts", "match"), [({"rtol": -1.0}, "rtol"), ({"order": 4}, "order"),
                                             ({"h_init": 0.0}, "h_init"),
                                             ({"safety": 2.0}, "safety")])
def test_bad_options_give_clear_errors(opts, match):
    sde = sde_lib.get("vp")
    ts = torch.tensor([sde.T, sde.t_min, 0.0], dtype=F64)
    with pytest.raises(ValueError, match=match):
        scoregen.sample(MIXTURE.model(sde), sde, (2, 2), "dpm_solver++_adaptive", None, ts=ts,
                        **opts)


def test_max_steps_stops_it():
    sde = sde_lib.get("vp")
    ts = torch.tensor([sde.T, sde.t_min, 0.0], dtype=F64)
    with pytest.raises(RuntimeError, match="max_steps"):
        scoregen.sample(MIXTURE.model(sde), sde, (2, 2), "dpm_solver++_adaptive", None, ts=ts,
                        rtol=1e-6, max_steps=3)
