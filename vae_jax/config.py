"""Frozen, typed configuration of the model, validated at construction and saved as JSON."""

import dataclasses
import json
from typing import Any

ACTIVATIONS = ("tanh", "relu", "elu", "gelu", "softplus", "silu")
LIKELIHOODS = ("bernoulli", "gaussian")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The VAE architecture and its likelihood.

    Attributes:
      data_dim: D, length of a flattened example.
      latent_dim: K, dimension of z.
      hidden: hidden layer widths of the encoder MLP; the decoder mirrors them in reverse.
      activation: one of ``ACTIVATIONS``.
      likelihood: ``"bernoulli"`` (logits g(z), binary data) or ``"gaussian"`` (mean g(z)).
      sigma: Gaussian decoder standard deviation (fixed), or its initial value when ``learn_sigma``.
      learn_sigma: learn a per-dimension log-sigma parameter instead of fixing sigma.
      min_log_var, max_log_var: bounds that keep the encoder's log variance in a safe range.
    """

    data_dim: int = 784
    latent_dim: int = 50
    hidden: tuple[int, ...] = (200, 200)
    activation: str = "tanh"
    likelihood: str = "bernoulli"
    sigma: float = 1.0
    learn_sigma: bool = False
    min_log_var: float = -20.0
    max_log_var: float = 20.0

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(self.hidden))
        for name in ("data_dim", "latent_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if any(isinstance(h, bool) or not isinstance(h, int) or h <= 0 for h in self.hidden):
            raise ValueError(f"hidden sizes must be positive integers, got {self.hidden!r}.")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; choose one of {ACTIVATIONS}.")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}.")
        if not self.sigma > 0 or self.sigma == float("inf"):
            raise ValueError(f"sigma must be a positive finite number, got {self.sigma!r}.")
        if not self.min_log_var < self.max_log_var:
            raise ValueError("min_log_var must be smaller than max_log_var.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
