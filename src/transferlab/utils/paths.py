"""Where the project's Hydra configs live."""

from pathlib import Path

# The config tree sits beside src/ in the project (an editable install, as `make env` does it).
CONF_DIR = str(Path(__file__).resolve().parents[3] / "conf")
