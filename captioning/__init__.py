"""captioning: attention-based image captioning experiments on Lightning and Hydra."""

from pathlib import Path

# The Hydra config tree; an absolute path, so console scripts find it as well as `python -m`.
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")
