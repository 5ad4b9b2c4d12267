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
      min_sigma: floor of a learned sigma. Pixels that are constant in the data (MNIST's borders)
        otherwise drive their sigma to 0 and the density to +infinity.
      min_log_var, max_log_var: bounds that keep the encoder's log variance in a safe range.
    """

    data_dim: int = 784
    latent_dim: int = 50
    hidden: tuple[int, ...] = (200, 200)
    activation: str = "tanh"
    likelihood: str = "bernoulli"
    sigma: float = 1.0
    learn_sigma: bool = False
    min_sigma: float = 1e-3
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
        if not 0 < self.min_sigma <= self.sigma:
            raise ValueError(f"min_sigma must be positive and at most sigma, got {self.min_sigma!r}.")
        if not self.min_log_var < self.max_log_var:
            raise ValueError("min_log_var must be smaller than max_log_var.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


OBJECTIVES = ("elbo", "iwae")
SCHEDULES = ("constant", "cosine", "exponential", "burda")
OUTPUT_BIAS_INITS = ("zero", "data_mean")


def _positive(name, value, kind=(int,)):
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a positive {'integer' if kind == (int,) else 'number'}, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How a model is trained.

    Attributes:
      dataset: a name from ``vae_jax.data.DATASETS``.
      train_split, valid_split: TFDS split strings; None picks the dataset's default.
      binarize: dynamic binarization x ~ Bernoulli(pixel), redrawn at every step (grey-level data).
      epochs, batch_size: length of training and examples per step.
      learning_rate, schedule, decay_rate: Adam's step size and its schedule over all steps
        (``constant``; ``cosine`` to 0; ``exponential`` to learning_rate * decay_rate; ``burda``: Burda et
        al. (2015)'s 8 stages i = 0..7 at learning_rate * 10^(-i/7), stage i lasting 3^i / 3280 of the
        epochs, so ``epochs=3280`` is the paper's protocol exactly).
      adam_eps: epsilon of Adam's denominator (Burda et al. used 1e-4; optax's default is 1e-8).
      grad_clip: clip gradients to this global norm; None for no clipping.
      objective: ``elbo`` (beta-weighted KL) or ``iwae`` (importance-weighted bound).
      num_samples: samples of z per example (ELBO average, or k of the IWAE bound).
      beta: weight of the KL term in the ``elbo`` objective.
      kl_warmup_epochs: beta grows linearly from 0 to ``beta`` over these epochs (0: off).
      output_bias_init: ``zero``, or ``data_mean``: the decoder's output bias starts at the logit of the
        training set's pixel means (Bernoulli) or at the means themselves (Gaussian), as Burda et al. did.
      seed: the base key; every random draw derives from it with ``fold_in``.
      checkpoint_every: save every N epochs (and at the end).
      keep_checkpoints: how many latest checkpoints to keep (the best is kept as well).
    """

    dataset: str = "binarized_mnist"
    train_split: str | None = None
    valid_split: str | None = None
    binarize: bool = False
    epochs: int = 10
    batch_size: int = 100
    learning_rate: float = 1e-3
    schedule: str = "constant"
    decay_rate: float = 0.1
    adam_eps: float = 1e-8
    grad_clip: float | None = None
    objective: str = "elbo"
    num_samples: int = 1
    beta: float = 1.0
    kl_warmup_epochs: int = 0
    output_bias_init: str = "zero"
    seed: int = 0
    checkpoint_every: int = 1
    keep_checkpoints: int = 3

    def __post_init__(self):
        for name in ("epochs", "batch_size", "num_samples", "checkpoint_every", "keep_checkpoints"):
            _positive(name, getattr(self, name))
        _positive("learning_rate", self.learning_rate, (int, float))
        _positive("decay_rate", self.decay_rate, (int, float))
        _positive("adam_eps", self.adam_eps, (int, float))
        if self.grad_clip is not None:
            _positive("grad_clip", self.grad_clip, (int, float))
        if isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) or not self.beta >= 0:
            raise ValueError(f"beta must be a non-negative number, got {self.beta!r}.")
        if isinstance(self.kl_warmup_epochs, bool) or not isinstance(self.kl_warmup_epochs, int) \
                or self.kl_warmup_epochs < 0:
            raise ValueError(f"kl_warmup_epochs must be a non-negative integer, got {self.kl_warmup_epochs!r}.")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; choose one of {OBJECTIVES}.")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {SCHEDULES}.")
        if self.output_bias_init not in OUTPUT_BIAS_INITS:
            raise ValueError(f"unknown output_bias_init {self.output_bias_init!r}; choose one of {OUTPUT_BIAS_INITS}.")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a training run; saved as ``WORKDIR/config.json`` and in each checkpoint."""

    model: ModelConfig
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "train": dataclasses.asdict(self.train)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExperimentConfig":
        return cls(ModelConfig.from_dict(data["model"]), TrainConfig(**data["train"]))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ExperimentConfig":
        return cls.from_dict(json.loads(text))

    def differences(self, other: "ExperimentConfig") -> list[str]:
        """Human-readable ``section.field: theirs != mine`` lines.

        ``epochs`` may differ (a run can be extended) unless the learning-rate schedule depends on it.
        """
        mine, theirs = self.to_dict(), other.to_dict()
        extendable = self.train.schedule == "constant"
        lines = []
        for section in mine:
            for key, value in mine[section].items():
                if not (key == "epochs" and extendable) and value != theirs[section].get(key):
                    lines.append(f"{section}.{key}: {theirs[section].get(key)!r} (saved) != {value!r} (now)")
        return lines
