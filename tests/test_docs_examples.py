"""The documented examples run as documented.

The worked examples of ``docs/adding-a-sampler.md``, ``docs/adding-an-sde.md`` and
``docs/adding-an-objective.md`` are taken from the pages themselves: the sampler is executed
and put through the shared order and NFE checks; the SDE and the objective are the shipped
modules (the page shows their code, checked here), so the shared suites of
``tests/test_sde.py`` and ``tests/test_objectives.py`` run on them. README's Python snippets
that need no files of their own run too.
"""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import pytest
import torch
from _oracle import MIXTURE, CountingModel, order_slope

import scoregen
from scoregen import samplers
from scoregen.samplers import SAMPLERS
from scoregen.training.config import ConfigError, parse_config
from scoregen.training.objectives import build_objective, random_batch
from scoregen.training.objectives.dsm import irreducible_gaussian

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def python_blocks(path: Path) -> list[str]:
    """The ```python blocks of a markdown file, in order."""
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def code_of(module_path: Path) -> str:
    """A module's code without its docstring and ``from __future__`` line (as pages show it)."""
    tree = ast.parse(module_path.read_text())
    body = [n for n in tree.body
            if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
            and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
    return "\n".join(ast.unparse(n) for n in body)


def same_code(shown: str, module_path: Path) -> bool:
    """Whether a page's block is the module's code (compared as parsed Python)."""
    shown_tree = ast.parse(shown)
    shown_body = [n for n in shown_tree.body
                  if not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
    return "\n".join(ast.unparse(n) for n in shown_body) == code_of(module_path)


# -- adding a sampler ----------------------------------------------------------------------------
@pytest.fixture
def ralston():
    code = next(b for b in python_blocks(DOCS / "adding-a-sampler.md") if "@register" in b)
    exec(compile(code, str(DOCS / "adding-a-sampler.md"), "exec"), {"__name__": "ralston_example"})
    yield "ode_ralston"
    SAMPLERS.unregister("ode_ralston")


def test_the_worked_sampler_registers_converges_and_counts_nfe(ralston):
    assert ralston in samplers.list()
    assert samplers.meta(ralston)["requires"] == frozenset({"scalar_kernel"})
    slope, errors = order_slope(ralston, "vp", (40, 80))
    assert slope > 1.5, (errors, slope)
    sde = scoregen.sde.get("vp")
    model = CountingModel(MIXTURE.model(sde))
    out = scoregen.sample(model, sde, (8, 2), ralston, 10, dtype=torch.float64)
    assert out.nfe == model.calls == 2 * 9 + 1
    with pytest.raises(TypeError, match="final"):  # it ends with the denoising step only
        scoregen.sample(model, sde, (8, 2), ralston, 10, final="solve")


# -- adding an SDE --------------------------------------------------------------------------------
def test_the_sde_page_shows_the_shipped_module_and_its_snippet_runs(capsys):
    blocks = python_blocks(DOCS / "adding-an-sde.md")
    shown = next(b for b in blocks if "@register" in b)
    assert same_code(shown, ROOT / "scoregen" / "sde" / "linear.py")
    assert "linear" in scoregen.sde.list() and scoregen.sde.get("linear").name == "linear"
    use = next(b for b in blocks if "scoregen.sample(" in b)
    exec(compile(use, "adding-an-sde.md", "exec"), {})
    assert "torch.Size([1000, 2]) 20" in capsys.readouterr().out


def test_the_sde_page_walks_through_cld_with_lines_of_the_shipped_module(capsys):
    """The second example's excerpt is code of scoregen/sde/cld.py, and its snippet runs."""
    blocks = python_blocks(DOCS / "adding-an-sde.md")
    excerpt = next(b for b in blocks if '@register("cld")' in b)
    module = (ROOT / "scoregen" / "sde" / "cld.py").read_text()
    for line in excerpt.strip().splitlines():
        assert line.strip() in module, line
    use = next(b for b in blocks if 'get("cld")' in b)
    exec(compile(use, "adding-an-sde.md", "exec"), {})
    assert "torch.Size([1000, 2]) 50" in capsys.readouterr().out


# -- adding an objective --------------------------------------------------------------------------
OBJECTIVE_PAGE = DOCS / "adding-an-objective.md"


def test_the_objective_page_shows_the_shipped_module():
    shown = next(b for b in python_blocks(OBJECTIVE_PAGE) if "@register" in b)
    assert same_code(shown, ROOT / "scoregen" / "training" / "objectives" / "min_snr.py")


def test_the_worked_objective_is_configured_from_its_signature():
    yaml_block = re.search(r"```yaml\n(.*?)```", OBJECTIVE_PAGE.read_text(), re.S).group(1)
    import yaml

    cfg = parse_config(yaml.safe_load(yaml_block))
    assert cfg.objective.name == "min_snr" and cfg.objective.options == {"gamma": 5.0}
    with pytest.raises(ConfigError, match="gamma must be > 0"):
        parse_config({"objective": {"name": "min_snr", "gamma": -1}})
    with pytest.raises(ConfigError, match="unknown key 'weighting' in objective"):
        parse_config({"objective": {"name": "min_snr", "weighting": "edm"}})
    with pytest.raises(ConfigError, match=r"objective\.gamma: must be a number"):
        parse_config({"objective": {"name": "min_snr", "gamma": "high"}})


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_min_snr_loss_of_the_exact_score_is_its_closed_form(sde_name):
    """Gaussian data N(mu, s^2 I): the exact eps-MSE at t is alpha^2 s^2 / (alpha^2 s^2 +
    sigma^2), so the expected min-SNR loss is the mean over t ~ U(t_min, T) of w(t) times it."""
    sde = scoregen.sde.get(sde_name)
    s2 = 0.3
    mix = scoregen.GaussianMixture(torch.tensor([[0.4, -0.1]]), s2)
    objective = build_objective("min_snr", sde, gamma=2.0)
    x0 = mix.sample(100_000, torch.Generator().manual_seed(0))
    batch = random_batch(x0, 3)
    t = sde.t_min + (sde.T - sde.t_min) * batch.u
    from scoregen.training.objectives import eps_error

    per_example = objective.weight(t) * eps_error(mix.model(sde), x0, t, batch.eps)
    mean = float(per_example.mean())
    stderr = float(per_example.std()) / math.sqrt(len(x0))
    assert mean == pytest.approx(float(objective(mix.model(sde), batch)), rel=1e-9)
    grid = torch.linspace(sde.t_min, sde.T, 200_001, dtype=torch.float64)
    closed = irreducible_gaussian(sde.alpha(grid), sde.sigma(grid), s2) * objective.weight(grid)
    exact = float(torch.trapezoid(closed, grid)) / (sde.T - sde.t_min)
    assert abs(mean - exact) < 4 * stderr, (mean, exact, stderr)


def test_training_with_the_worked_objective_lowers_its_loss():
    """200 steps at least halve the excess of the loss over that of the exact score of the
    data (8gaussians is the ring8 mixture of radius 0.8, std 0.04)."""
    from scoregen.data import load_dataset
    from scoregen.models import ScoreModel, build_network

    torch.manual_seed(0)
    sde = scoregen.sde.get("vp")
    data = load_dataset("8gaussians", n=2000)
    model = ScoreModel(build_network("mlp", (2,), width=32, depth=2), sde)
    objective = build_objective("min_snr", sde)
    held_out = random_batch(data[:1024], 99)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        before = float(objective(model, held_out))
        floor = float(objective(scoregen.analytic.ring8(radius=0.8, std=0.04).model(sde),
                                held_out))
    for step in range(200):
        idx = torch.randint(len(data), (256,), generator=torch.Generator().manual_seed(step))
        loss = objective(model, random_batch(data[idx], 0, step=step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(objective(model, held_out))
    assert after - floor < 0.5 * (before - floor), (before, after, floor)


# -- README ---------------------------------------------------------------------------------------
def test_readme_python_snippets_run():
    """README's ``In Python`` and conditioning snippets, in order, in one namespace (the
    adapter snippet needs the user's own files and is not run; the distillation snippet trains
    for minutes, and tests/test_distill.py runs the same calls on a small budget)."""
    blocks = [b for b in python_blocks(ROOT / "README.md") if "path/to/" not in b
              and "my_network" not in b and "my_denoiser" not in b
              and "scoregen.distill(" not in b]
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:
        namespace.pop("res", None)
        exec(compile(block, "README.md", "exec"), namespace)
        res = namespace["res"]  # every snippet samples; its samples are finite, of its data
        assert torch.isfinite(res.x).all() and res.nfe > 0
        shape = namespace["mix"].shape if "mix" in namespace else (2,)
        assert res.x.shape[1:] == tuple(shape)
