"""The validated options of one ``compile``/``prune`` call."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Union

from sparsefx.errors import ConfigError

PATTERNS = ("tile",)
LAYOUTS = ("row_major", "feature_major")
IMPORTANCES = ("magnitude", "taylor")

#: ``exclude=`` accepts a layer name, a regular expression (string or compiled, matched
#: in full against the layer name), a callable ``(name, weight_shape) -> bool``, or a
#: list of these.
ExcludeSpec = Union[None, str, "re.Pattern[str]", Callable[..., bool], Iterable[Any]]


@dataclass(frozen=True)
class CompileConfig:
    pattern: str = "tile"
    sparsity: float = 0.5
    G: int = 128
    importance: str = "magnitude"
    calibration: Any = None
    loss_fn: Optional[Callable[..., Any]] = None
    exclude: ExcludeSpec = None
    delta: float = 0.0
    apriori: bool = False
    column_share: float = 0.25
    min_density: float = 0.0
    max_density: float = 1.0
    layout: str = "row_major"
    _exclude_rules: tuple = field(default=(), repr=False, compare=False)

    @property
    def tw_sparsity(self) -> float:
        """Sparsity the TW stage aims at: TEW prunes ``sparsity + delta`` first."""
        return self.sparsity + self.delta

    def is_excluded(self, name: str, weight_shape: tuple[int, ...]) -> bool:
        return any(rule(name, weight_shape) for rule in self._exclude_rules)


def make_config(**kwargs: Any) -> CompileConfig:
    """Validate the user's options; every error names the argument and a fix."""
    cfg = CompileConfig(**kwargs)
    if cfg.pattern not in PATTERNS:
        raise ConfigError(f"pattern={cfg.pattern!r} is not supported; choose one of {PATTERNS}")
    if not isinstance(cfg.sparsity, (int, float)) or not 0.0 <= cfg.sparsity < 1.0:
        raise ConfigError(f"sparsity={cfg.sparsity!r} must be a number in [0, 1), "
                          "e.g. 0.75 to remove three quarters of the prunable weights")
    if isinstance(cfg.G, bool) or not isinstance(cfg.G, int) or cfg.G < 1:
        raise ConfigError(f"G={cfg.G!r} must be an integer >= 1 (the tile width in output "
                          "features; 64 or 128 suit GPUs)")
    if cfg.importance not in IMPORTANCES:
        raise ConfigError(f"importance={cfg.importance!r} is not supported; choose one of "
                          f"{IMPORTANCES}")
    if not 0.0 <= cfg.delta or cfg.sparsity + cfg.delta >= 1.0:
        raise ConfigError(f"delta={cfg.delta!r} must be >= 0 with sparsity + delta < 1 "
                          f"(sparsity={cfg.sparsity})")
    if not 0.0 <= cfg.column_share <= 1.0:
        raise ConfigError(f"column_share={cfg.column_share!r} must be in [0, 1]")
    if not 0.0 <= cfg.min_density <= cfg.max_density <= 1.0:
        raise ConfigError(f"need 0 <= min_density <= max_density <= 1, got "
                          f"min_density={cfg.min_density}, max_density={cfg.max_density}")
    if cfg.layout not in LAYOUTS:
        raise ConfigError(f"layout={cfg.layout!r} is not supported; choose one of {LAYOUTS}")
    if cfg.loss_fn is not None and not callable(cfg.loss_fn):
        raise ConfigError("loss_fn must be callable as loss_fn(output, batch) -> scalar tensor")
    if cfg.importance == "taylor" and cfg.calibration is None:
        raise ConfigError("importance='taylor' needs calibration data: pass calibration= "
                          "an iterable of model inputs (a tensor, a tuple of args or a dict "
                          "of kwargs per batch)")
    rules = tuple(_exclude_rule(item) for item in _as_list(cfg.exclude))
    object.__setattr__(cfg, "_exclude_rules", rules)
    return cfg


def _as_list(spec: ExcludeSpec) -> list[Any]:
    if spec is None:
        return []
    if isinstance(spec, (str, re.Pattern)) or callable(spec):
        return [spec]
    try:
        return list(spec)
    except TypeError:
        raise ConfigError(f"exclude={spec!r} must be a name, a regex, a callable "
                          "(name, weight_shape) -> bool, or a list of these") from None


def _exclude_rule(item: Any) -> Callable[[str, tuple], bool]:
    if isinstance(item, str):
        try:
            pattern = re.compile(item)
        except re.error as exc:
            raise ConfigError(f"exclude entry {item!r} is not a valid regex: {exc}") from None
        return lambda name, shape: name == item or pattern.fullmatch(name) is not None
    if isinstance(item, re.Pattern):
        return lambda name, shape: item.fullmatch(name) is not None
    if callable(item):
        return lambda name, shape: bool(item(name, shape))
    raise ConfigError(f"exclude entry {item!r} must be a name, a regex or a callable")
