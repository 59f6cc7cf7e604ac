"""captioning: attention-based image captioning experiments on Lightning and Hydra."""

import os
from importlib import resources
from pathlib import Path

from omegaconf import OmegaConf


def _config_dir() -> str:
    """The Hydra config tree as a folder: ``conf/`` beside the package in a checkout, else the
    ``captioning.conf`` package the wheel installs (also ``pkg://captioning.conf`` to Hydra)."""
    checkout = Path(__file__).resolve().parents[1] / "conf"
    if (checkout / "train.yaml").is_file() and (checkout.parent / "pyproject.toml").is_file():
        return str(checkout)
    return str(resources.files("captioning.conf"))


# An absolute path, so console scripts find it as well as `python -m`, from any folder.
CONFIG_DIR = _config_dir()

# ${captioning.or:${run_name},fallback}: the value, or the fallback when it is null (oc.select
# returns null for a null value). Registered on import, before Hydra composes a config.
OmegaConf.register_new_resolver(
    "captioning.or", lambda value, fallback: fallback if value is None else value, replace=True
)
# W&B is offline unless WANDB_MODE=online (or logger.wandb.offline=false): no account needed.
OmegaConf.register_new_resolver(
    "captioning.wandb_offline",
    lambda: os.environ.get("WANDB_MODE", "offline") not in ("online", "run"),
    replace=True,
)
# The W&B group of a run: the multirun folder's name in a sweep, none for a single run.
OmegaConf.register_new_resolver(
    "captioning.sweep_group",
    lambda mode, sweep_dir: Path(str(sweep_dir)).name if "MULTIRUN" in str(mode) else None,
    replace=True,
)
