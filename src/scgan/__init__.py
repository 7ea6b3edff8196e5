"""SCGAN: unsupervised anomaly detection by restoring normal semantics (Dai et al., IEEE Access 2023)."""
from scgan.config import Config, load_config
from scgan.layers.mscam import MSCAM
from scgan.losses import ssim
from scgan.models.networks import Discriminator, Generator
from scgan.seed import seed_everything

__version__ = "0.1.0"

__all__ = [
    "Config",
    "Discriminator",
    "Generator",
    "MSCAM",
    "load_config",
    "seed_everything",
    "ssim",
    "__version__",
]
