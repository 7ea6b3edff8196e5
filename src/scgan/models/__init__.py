"""SCGAN networks."""
from scgan.models.networks import (
    Decoder,
    Discriminator,
    DiscriminatorOutput,
    Encoder,
    Generator,
    GeneratorOutput,
    weights_init,
)

__all__ = [
    "Decoder",
    "Discriminator",
    "DiscriminatorOutput",
    "Encoder",
    "Generator",
    "GeneratorOutput",
    "weights_init",
]
