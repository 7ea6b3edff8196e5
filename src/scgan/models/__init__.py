"""SCGAN networks."""
from scgan.models.networks import (
    Decoder,
    Discriminator,
    DiscriminatorOutput,
    Encoder,
    Generator,
    GeneratorOutput,
    init_weights,
    weights_init,
)

__all__ = [
    "Decoder",
    "Discriminator",
    "DiscriminatorOutput",
    "Encoder",
    "Generator",
    "GeneratorOutput",
    "init_weights",
    "weights_init",
]
