"""Typed run configuration: ``data``, ``sde``, ``model``, ``objective``, ``train``, ``sample``.

A config file (YAML, TOML or JSON) holds up to these six sections; every key is checked
against a dataclass here, and registry-specific keys (an SDE's ``beta_max``, a network's
``width``, a dataset's ``root``, an objective's ``weighting``, a sampler's ``eta``) against
the registered constructor's signature, so each choice is written once, where it is
implemented. A ``loss`` section of earlier run configs (``kind``, ``weighting``, ...) is read as
the ``objective`` it names. Errors name the key: ``train.lr: must be > 0``, ``unknown key 'trian' in
config (did you mean 'train'?)``.

Overrides use dotted keys, ``apply_overrides(raw, ["train.steps=200", "sde.name=ve"])``,
values parsed as YAML. Float fields also accept strings such as ``1e-3`` (YAML 1.1 reads
those as strings).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import inspect
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from scoregen.models.prediction import PARAMETERIZATIONS
from scoregen.sde.base import FINITE_TERMINAL_SNR


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


@dataclass
class DataConfig:
    """``name``: a dataset of ``scoregen.data.DATASETS``; other keys are its options.

    ``stream``: read examples on demand through a ``DataLoader`` with ``workers`` worker
    processes instead of holding the whole set in memory (:mod:`scoregen.data.loader`).
    """

    name: str = "8gaussians"
    stream: bool = False
    workers: int = 2
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class SDEConfig:
    """``name``: an SDE of ``scoregen.sde.list()``; other keys are its constructor arguments."""

    name: str = "vp"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """``network`` of ``scoregen.models.NETWORKS``, ``prediction`` (a parameterization of
    :mod:`scoregen.models.prediction`: eps, x0, v, edm), ``sigma_data``; other keys are the
    network's options."""

    network: str = "mlp"
    prediction: str = "eps"
    sigma_data: float = 0.5
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ObjectiveConfig:
    """``name``: an objective of :mod:`scoregen.training.objectives` (``auto``: ``ddpm`` on the
    discrete DDPM process, ``dsm`` otherwise); other keys are its options (e.g. ``dsm``'s
    ``weighting``, ``t_sampling``)."""

    name: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """The ``train`` config section: the trainer's options and the run folder.

    Attributes:
        steps: optimizer steps in total (a resumed run continues up to it).
        batch_size, lr, weight_decay: minibatch size and AdamW parameters; ``batch_size`` is
            the global batch, split evenly over processes (``torchrun``).
        accumulate: micro-batches per step on each process (gradient accumulation).
        warmup: steps of linear LR warm-up; grad_clip: max gradient norm (0 = off).
        ema_decay: EMA decay of the weights used for sampling.
        ema_sigma_rel: widths of power-function EMAs to track for post-hoc EMA (EDM2; e.g.
            ``[0.05, 0.1]``; empty: none), written as snapshots every
            ``ema_snapshot_every`` steps (0: at every checkpoint) and reconstructed at any
            width by ``scoregen ema`` (:mod:`scoregen.training.posthoc_ema`).
        seed: seeds the model init (in :func:`build_trainer`) and every training draw.
        device: ``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda[:N]``.
        precision: ``auto`` (bf16 autocast on CUDA if supported, fp32 on CPU), ``fp32``,
            ``bf16``.
        threads: CPU threads for torch (0 = from the environment: ``OMP_NUM_THREADS`` when
            set, else the cores this process may use; resolved by ``build_trainer``, while a
            ``Trainer`` built directly leaves torch's setting alone).
        log_every, ckpt_every, sample_every: intervals in steps (0 = only at the end).
        keep_checkpoints: how many of the newest checkpoints to keep.
        max_seconds: wall-clock budget of one ``fit`` (0 = none): training stops cleanly
            after the step that reaches it, with a checkpoint (``--time-limit``).
        max_weight: the divergence guard never saves weights with ``|w|`` above it (0 = only
            NaN/Inf are refused).
        label_dropout: for a class-conditional model (``model.num_classes``), the fraction
            of labels replaced by the null label (classifier-free guidance training); ``None``
            means 0.1 for a conditional model.
        out: the run folder.
    """

    steps: int = 2000
    batch_size: int = 256
    accumulate: int = 1
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ema_sigma_rel: list[float] = field(default_factory=list)
    ema_snapshot_every: int = 0
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    threads: int = 0
    log_every: int = 50
    ckpt_every: int = 1000
    sample_every: int = 1000
    keep_checkpoints: int = 3
    max_seconds: float = 0.0
    max_weight: float = 1e4
    label_dropout: float | None = None
    out: str = "runs/default"


@dataclass
class SampleConfig:
    """Sampling for plots and ``scoregen sample`` defaults: ``sampler``, ``steps``, ``n``,
    ``spacing``, ``seed``; other keys are the sampler's options (e.g. ``eta``)."""

    sampler: str = "ddim"
    steps: int = 50
    n: int = 64
    spacing: str = "auto"
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Config:
    """A whole run."""

    data: DataConfig = field(default_factory=DataConfig)
    sde: SDEConfig = field(default_factory=SDEConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (``options`` merged into their section); :func:`parse_config`
        inverts it."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            section = dataclasses.asdict(getattr(self, f.name))
            options = section.pop("options", {})
            out[f.name] = {**section, **options}
        return out


# -- value rules: (section, key) -> (predicate, message) ---------------------------------------
def _choice(*names: str) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in names), f"must be one of {', '.join(names)}"


SEED_MAX = 2**62  # sample k uses seed + k, a 64-bit integer
_POSITIVE = (lambda v: v > 0), "must be > 0"
_NONNEG = (lambda v: v >= 0), "must be >= 0"
RULES: dict[tuple[str, str], tuple[Callable[[Any], bool], str]] = {
    ("model", "prediction"): _choice(*PARAMETERIZATIONS),
    ("model", "sigma_data"): _POSITIVE,
    ("train", "steps"): _POSITIVE,
    ("train", "batch_size"): _POSITIVE,
    ("train", "accumulate"): _POSITIVE,
    ("data", "workers"): _NONNEG,
    ("train", "lr"): _POSITIVE,
    ("train", "weight_decay"): _NONNEG,
    ("train", "warmup"): _NONNEG,
    ("train", "grad_clip"): _NONNEG,
    ("train", "ema_decay"): ((lambda v: 0 <= v < 1), "must lie in [0, 1)"),
    ("train", "ema_sigma_rel"): ((lambda v: isinstance(v, list) and all(
        isinstance(s, int | float) and 0 < s < 0.2886 for s in v)),
        "must be a list of widths in (0, 0.2886), e.g. [0.05, 0.1]"),
    ("train", "ema_snapshot_every"): _NONNEG,
    ("train", "precision"): _choice("auto", "fp32", "bf16"),
    ("train", "threads"): _NONNEG,
    ("train", "log_every"): _POSITIVE,
    ("train", "ckpt_every"): _NONNEG,
    ("train", "sample_every"): _NONNEG,
    ("train", "keep_checkpoints"): _POSITIVE,
    ("train", "max_seconds"): _NONNEG,
    ("train", "max_weight"): _NONNEG,
    ("train", "label_dropout"): ((lambda v: v is None or 0 <= v <= 1), "must lie in [0, 1]"),
    ("sample", "steps"): _POSITIVE,
    ("sample", "n"): _POSITIVE,
    ("sample", "spacing"): _choice("auto", "uniform", "quadratic", "logsnr", "edm", "trailing"),
    ("train", "seed"): ((lambda v: 0 <= v <= SEED_MAX), "must lie in [0, 2^62]"),
    ("sample", "seed"): ((lambda v: 0 <= v <= SEED_MAX), "must lie in [0, 2^62]"),
}


def _did_you_mean(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(where: str, value: Any, typ: Any) -> Any:
    """Check ``value`` against a simple type hint (str, int, float, bool, X | None, dict)."""
    origin = get_origin(typ)
    if origin in (Union, UnionType):
        args = get_args(typ)
        if value is None and type(None) in args:
            return None
        typ = next(a for a in args if a is not type(None))
        origin = get_origin(typ)
    if typ is float:
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{where}: must be a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"{where}: must be a number, got {value!r}")
    if typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: must be an integer, got {value!r}")
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: must be true or false, got {value!r}")
    if typ is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: must be a string, got {value!r}")
    return value


def _section_options(section: str, obj: Any) -> tuple[str, dict[str, Any]] | None:
    """(what, known options) for sections whose extra keys go to a registered object."""
    if section == "data":
        from scoregen.data import dataset_options

        return f"dataset {obj.name!r}", dataset_options(obj.name)
    if section == "sde":
        from scoregen.sde import SDES

        params = inspect.signature(SDES.get(obj.name).__init__).parameters
        return f"SDE {obj.name!r}", {k: p.default for k, p in params.items() if k != "self"}
    if section == "model":
        from scoregen.models import network_options

        return f"network {obj.network!r}", network_options(obj.network)
    if section == "objective":
        from scoregen.training.objectives import AUTO, objective_options

        # auto takes dsm's options (it is ddpm only where no option is given)
        name = "dsm" if obj.name == AUTO else obj.name
        return f"objective {obj.name!r}", objective_options(name)
    if section == "sample":
        from scoregen.samplers import get

        params = inspect.signature(get(obj.sampler)).parameters
        return f"sampler {obj.sampler!r}", {
            k: p.default for k, p in params.items()
            if p.kind is p.KEYWORD_ONLY and k not in ("noise", "callback")
        }
    return None


def _parse_section(name: str, cls: type, raw: Any) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: must be a mapping of keys to values, got {raw!r}")
    hints = get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.name != "options"]
    values = {k: _coerce(f"{name}.{k}", v, hints[k]) for k, v in raw.items() if k in fields}
    extra = {k: v for k, v in raw.items() if k not in fields}
    obj = cls(**values)
    for key, value in values.items():
        rule = RULES.get((name, key))
        if rule and not rule[0](value):
            raise ConfigError(f"{name}.{key}: {rule[1]}, got {value!r}")
    if "options" not in hints:
        if extra:
            key = next(iter(extra))
            raise ConfigError(f"unknown key {key!r} in {name}{_did_you_mean(key, fields)}; "
                              f"known: {', '.join(fields)}")
        return obj
    try:
        what, known = _section_options(name, obj)
    except KeyError as err:
        raise ConfigError(f"{name}: {err.args[0]}") from None
    for key in extra:
        if key not in known:
            raise ConfigError(
                f"unknown key {key!r} in {name}{_did_you_mean(key, [*fields, *known])}; "
                f"{name} keys: {', '.join(fields)}; {what} options: "
                f"{', '.join(known) or '(none)'}"
            )
    obj.options = {k: check_option(f"{name}.{k}", v, known[k]) for k, v in extra.items()}
    return obj


def check_option(where: str, value: Any, default: Any) -> Any:
    """Check a registered object's option against the type of its default value.

    A default of ``None`` (or none) accepts anything; numbers must be numbers (ints where
    the default is an int; floats also from strings such as ``1e-3``), booleans booleans,
    strings strings, lists lists (the range of a value is the object's own check). Raises
    :class:`ConfigError` naming ``where``.
    """
    if default is None or default is inspect.Parameter.empty or value is None:
        return value
    if isinstance(default, bool):
        return _coerce(where, value, bool)
    if isinstance(default, float) and not math.isfinite(default) and isinstance(
            value, int | float) and not isinstance(value, bool):
        return float(value)  # e.g. heun's s_tmax = inf
    if isinstance(default, int | float):
        return _coerce(where, value, int if isinstance(default, int) else float)
    if isinstance(default, str):
        return _coerce(where, value, str)
    if isinstance(default, list | tuple) and not isinstance(value, list | tuple):
        raise ConfigError(f"{where}: must be a list, got {value!r}")
    return value


def parse_config(raw: dict[str, Any]) -> Config:
    """Validate a nested dict into a :class:`Config` (errors name the offending key)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping with sections, got {type(raw).__name__}")
    raw = _objective_from_loss_section(raw)
    sections = {f.name: f.type for f in dataclasses.fields(Config)}
    hints = get_type_hints(Config)
    for key in raw:
        if key not in sections:
            raise ConfigError(f"unknown key {key!r} in config{_did_you_mean(key, sections)}; "
                              f"sections: {', '.join(sections)}")
    cfg = Config(**{k: _parse_section(k, hints[k], raw.get(k)) for k in sections})
    _check_consistency(cfg)
    return cfg


def _objective_from_loss_section(raw: dict[str, Any]) -> dict[str, Any]:
    """A ``loss`` section (``kind`` auto/dsm/ddpm and DSM's options, as run configs stored it)
    read as the ``objective`` section it means: ``name = kind``, the options that differ
    from their defaults."""
    if "loss" not in raw:
        return raw
    if "objective" in raw:
        raise ConfigError("give the objective in one section: 'objective' (the 'loss' section "
                          "is its older name)")
    loss = raw["loss"] if raw["loss"] is not None else {}
    if not isinstance(loss, dict):
        raise ConfigError(f"loss: must be a mapping of keys to values, got {loss!r}")
    from scoregen.training.objectives import objective_options

    defaults = objective_options("dsm")
    options = {k: v for k, v in loss.items() if k != "kind" and defaults.get(k, v is None) != v}
    out = {k: v for k, v in raw.items() if k != "loss"}
    out["objective"] = {"name": loss.get("kind", "auto"), **options}
    return out


def _check_consistency(cfg: Config) -> None:
    """Cross-section checks that need the registries (SDE arguments, weighting names)."""
    from scoregen.sde import get
    from scoregen.training.objectives import build_objective

    try:
        sde = get(cfg.sde.name, **cfg.sde.options)
    except (TypeError, ValueError, KeyError) as err:
        raise ConfigError(f"sde: {err.args[0] if err.args else err}") from None
    from scoregen.models import NETWORKS
    from scoregen.training.objectives import OBJECTIVES, resolve_name

    classifier_net = NETWORKS.meta(cfg.model.network).get("kind") == "classifier"
    classifier_loss = OBJECTIVES.meta(resolve_name(cfg.objective.name, sde)).get(
        "model") == "classifier"
    if classifier_net != classifier_loss:
        raise ConfigError(
            f"model.network {cfg.model.network!r} and objective.name {cfg.objective.name!r} "
            "do not fit: a noise-conditional classifier is network 'classifier' with objective "
            "'classifier' (and model.num_classes); a score model takes any other pair")
    if (not sde.capabilities >= {FINITE_TERMINAL_SNR} and not classifier_net
            and cfg.model.prediction in ("eps", "edm")):
        raise ConfigError(f"model.prediction: {cfg.model.prediction!r} cannot give x0 where "
                          "alpha(T) = 0 (sde.zero_terminal_snr); use v (Lin et al. 2024) or x0")
    try:
        build_objective(cfg.objective.name, sde, **cfg.objective.options)
    except (TypeError, ValueError, KeyError) as err:
        raise ConfigError(f"objective: {err.args[0] if err.args else err}") from None
    from scoregen.samplers import check_applies

    try:
        check_applies(cfg.sample.sampler, sde)
    except (ValueError, KeyError) as err:
        raise ConfigError(f"sample.sampler: {err.args[0] if err.args else err}") from None
    n_classes = cfg.model.options.get("num_classes")
    if n_classes is not None and not (isinstance(n_classes, int) and n_classes >= 0):
        raise ConfigError(f"model.num_classes: must be an integer >= 0, got {n_classes!r}")
    if n_classes:
        from scoregen.data import DATASETS

        if not DATASETS.meta(cfg.data.name).get("labeled"):
            raise ConfigError(f"model.num_classes is set but dataset {cfg.data.name!r} has no "
                              "class labels; use a labeled dataset or drop model.num_classes")
    elif cfg.train.label_dropout is not None:
        raise ConfigError("train.label_dropout needs a class-conditional model: set "
                          "model.num_classes")
    if cfg.train.device not in ("auto", "cpu") and not cfg.train.device.startswith(("cuda", "mps")):
        raise ConfigError(f"train.device: must be auto, cpu, cuda[:N] or mps, "
                          f"got {cfg.train.device!r}")


def _toml() -> Any:
    """``tomllib`` (Python >= 3.11) or its backport ``tomli``."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ConfigError("reading TOML needs Python >= 3.11 or `pip install tomli`; "
                              "or use a YAML/JSON config") from None
    return tomllib


class _DuplicateKeyError(Exception):
    """A key repeated in one mapping of a config file (``where``: its line, when known)."""

    def __init__(self, key: Any, where: str = "") -> None:
        super().__init__(key, where)
        self.key, self.where = key, where


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated in one mapping (YAML says keys are
    unique; PyYAML would keep the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges; explicit keys override merged ones
            key = self.construct_object(key_node, deep=True)
            with contextlib.suppress(TypeError):  # unhashable: PyYAML's own error follows
                line = key_node.start_mark.line + 1
                if key in first:
                    raise _DuplicateKeyError(key, f"lines {first[key]} and {line}")
                first[key] = line
        return super().construct_mapping(node, deep=deep)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` of :func:`json.loads` that refuses a repeated key."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(key)
        out[key] = value
    return out


def read_file(path: str | Path) -> dict[str, Any]:
    """A YAML (.yaml/.yml), TOML (.toml) or JSON (.json) file as a dict.

    A key repeated in one mapping is an error naming the key and the file (a repeated
    section would otherwise replace the first one silently).
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config {path} is a folder, not a file; give a .yaml, .toml or "
                          ".json file")
    if not path.is_file():
        if path.exists():
            raise ConfigError(f"config {path} is not a regular file; give a .yaml, .toml or "
                              ".json file")
        raise FileNotFoundError(f"config file {path} not found")
    if path.suffix not in (".toml", ".json", ".yaml", ".yml"):
        raise ConfigError(f"{path}: unknown config format {path.suffix!r}; "
                          "use .yaml, .yml, .toml or .json")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not a text file (byte {err.start} is not UTF-8); a config "
                          "is YAML, TOML or JSON text") from None
    try:
        if path.suffix == ".toml":
            raw = _toml().loads(text)
        elif path.suffix == ".json":
            raw = json.loads(text, object_pairs_hook=_unique_pairs)
        else:
            raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKeyError as dup:
        where = f" ({dup.where})" if dup.where else ""
        raise ConfigError(f"{path}: key {dup.key!r} is given twice in one mapping{where}; the "
                          "second would silently replace the first: keep one") from None
    except (yaml.YAMLError, json.JSONDecodeError, ValueError) as err:
        raise ConfigError(f"{path}: cannot parse: {err}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping with sections (data, sde, model, "
                          f"...), but the file holds a {type(raw).__name__}")
    return {} if raw is None else raw


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``raw`` with ``section.key=value`` overrides applied (values parsed as YAML)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping with sections, got {type(raw).__name__}")
    out = json.loads(json.dumps(raw))
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise ConfigError(f"override {item!r} must look like section.key=value, "
                              "e.g. train.steps=200")
        node = out
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as err:
            problem = str(err).splitlines()[0]
            raise ConfigError(f"override {item!r}: the value {text!r} is not valid YAML "
                              f"({problem}); quote it or fix it, e.g. {key}=1e-3") from None
    return out


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Read ``path`` (or start from defaults), apply ``overrides``, validate."""
    raw = read_file(path) if path is not None else {}
    return parse_config(apply_overrides(raw, overrides))


def save_config(cfg: Config, path: str | Path, *, kind: str = "output") -> None:
    """Write ``cfg`` as YAML (round-trips through :func:`load_config`), atomically
    (:func:`scoregen.infra.outputs.write_text`; ``kind="run"`` for a run's ``config.yaml``)."""
    from scoregen.infra.outputs import write_text

    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False), kind=kind)


__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "SDEConfig",
    "SampleConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "parse_config",
    "read_file",
    "save_config",
]
