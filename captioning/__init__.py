"""captioning: attention-based image captioning experiments on Lightning and Hydra."""

import os
from pathlib import Path

from omegaconf import OmegaConf

# The Hydra config tree; an absolute path, so console scripts find it as well as `python -m`.
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")

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
