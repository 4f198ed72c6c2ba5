"""Names with parameters (``scoregen/infra/spec.py``): SDEs and presets from one string, on the
command line wherever ``--sde`` or ``--preset`` is accepted, and clear errors for bad ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scoregen import sde as sde_lib
from scoregen.cli import main
from scoregen.infra.spec import SpecError, parse_spec
from scoregen.models import analytic
from scoregen.sde.spec import describe, from_spec


def test_parse_spec_reads_names_and_typed_values():
    assert parse_spec("vp") == ("vp", {})
    assert parse_spec(" ve:sigma_min=0.002, sigma_max=80 ") == (
        "ve", {"sigma_min": 0.002, "sigma_max": 80})
    assert parse_spec("x:a=1e-3,b=true,c=name") == ("x", {"a": 1e-3, "b": True, "c": "name"})


@pytest.mark.parametrize("bad, message", [
    (":a=1", "no name"), ("ve:", "ends with ':'"), ("ve:sigma_min", "not KEY=VALUE"),
    ("ve:sigma_min=", "not KEY=VALUE"), ("ve:a=1,a=2", "twice")])
def test_malformed_specs_say_what_is_wrong(bad, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(bad)


def test_sde_from_spec_builds_the_process_and_names_bad_parameters():
    edm = from_spec("ve:sigma_min=0.002,sigma_max=80")
    assert edm == sde_lib.get("ve", sigma_min=0.002, sigma_max=80.0)
    assert describe(edm) == "ve:sigma_min=0.002,sigma_max=80" and describe(from_spec("vp")) == "vp"
    assert from_spec(edm) is edm
    with pytest.raises(SpecError, match=r"no parameter 'sigma_mn'.*sigma_min, sigma_max"):
        from_spec("ve:sigma_mn=1")
    with pytest.raises(SpecError, match="known SDEs"):
        from_spec("vx:sigma_min=1")
    with pytest.raises(SpecError, match="sigma_min must be smaller"):
        from_spec("ve:sigma_min=100")


def test_preset_from_spec_sets_classes_round_robin():
    two = analytic.from_spec("ring8:classes=2")
    assert two.labels.tolist() == [0, 1] * 4 and two.num_classes == 2
    assert analytic.from_spec("mix64:classes=3").labels.tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert analytic.from_spec("ring8:std=0.05").evals.max() == pytest.approx(0.0025)
    assert analytic.preset("ring8").num_classes == 8
    with pytest.raises(ValueError, match=r"no parameter 'clases'.*classes"):
        analytic.from_spec("ring8:clases=2")
    with pytest.raises(ValueError, match=r"classes must be an integer in \[1, 8\]"):
        analytic.from_spec("ring8:classes=9")


def test_cli_takes_sde_and_preset_parameters(tmp_path: Path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--preset", "ring8:classes=2", "--sde",
                 "ve:sigma_min=0.002,sigma_max=80", "--samplers", "unipc,ddim", "--budgets", "5",
                 "-n", "16", "--out", str(out), "--no-progress"]) == 0
    raw = json.loads((out / "results.json").read_text())
    assert raw["problem"]["sde"]["sigma_min"] == 0.002 and raw["problem"]["sde"]["sigma_max"] == 80
    assert "ve:sigma_min=0.002,sigma_max=80" in raw["problem"]["name"]
    assert {r["method"] for r in raw["records"]} == {"unipc", "ddim"}
    capsys.readouterr()
    assert main(["compare", "--sde", "ve:sigma_mn=0.002", "--samplers", "ddim", "--budgets",
                 "5", "-n", "8", "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "no parameter 'sigma_mn'" in err and "e.g. ve:sigma_min=0.002,sigma_max=80" in err
    assert main(["tune-grid", "ring8", "--sde", "ve:sigma_min", "--sampler", "ddim", "--nfe",
                 "3", "--no-progress"]) == 1
    assert "not KEY=VALUE" in capsys.readouterr().err
