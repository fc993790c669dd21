"""Load an experiment: the config (schema, types, semantic checks: gdm.config) and then the checks that
each registry makes of the names that pick its entries (a dataset family and its params, a photo
source, a model for the image size, a σ law, a similarity). Everything is refused here, naming the key,
before any folder is made or any job submitted. gdm.config itself imports nothing from gdm; this is
where the config meets the registries.
"""

from __future__ import annotations

from collections.abc import Sequence

from gdm.analysis.similarity import SIMILARITIES
from gdm.config import ConfigError, ConfigFiles, ExperimentConfig, load_config
from gdm.data.families import check_dataset
from gdm.models import check_image_size
from gdm.training.loss_weighting import LOSS_WEIGHTINGS
from gdm.training.sigma import SIGMA_LAWS


def load_experiment(path: ConfigFiles = None, overrides: Sequence[str] = (), *,
                    need_source: bool = True) -> ExperimentConfig:
    """`load_config`, then `check_registries`. need_source=False: a photo source need not exist here (commands
    that read only the run folder: status, report, cancel, cells; a cell's name never depends on the path)."""
    cfg = load_config(path, list(overrides))
    check_registries(cfg, need_source=need_source)
    return cfg


def check_registries(cfg: ExperimentConfig, *, need_source: bool = True) -> None:
    """ConfigError naming the key whose value no registry holds, or which its entry cannot take."""
    _check_choice("trainer.sigma_law", cfg.trainer.sigma_law, SIGMA_LAWS)
    _check_choice("trainer.loss_weighting", cfg.trainer.loss_weighting, LOSS_WEIGHTINGS)
    _check_choice("eval.similarity", cfg.eval.similarity, SIMILARITIES)
    for name, data in cfg.datasets.items():
        check_dataset(data, f"datasets.{name}", need_source=need_source)
        try:
            check_image_size(cfg.model, data.image_size)
        except ValueError as err:
            raise ConfigError(f"config key 'datasets.{name}.image_size': {err}") from None


def _check_choice(key: str, value: str, registry: dict) -> None:
    if value not in registry:
        raise ConfigError(f"config key '{key}' is {value!r}; allowed values: {', '.join(registry)}")
