"""Frozen, typed configuration of a run, validated at construction and saved as JSON.

Each field carries its help text in ``metadata["help"]``; the command line is built from these
dataclasses (:mod:`vae_jax.cli`), so an option, its default and its help are written once, here.
Other metadata: ``positive`` (a number that must be > 0 and finite), ``range`` (low, high), ``choices``,
and ``cli=False`` for fields that are not command-line options.
"""

import dataclasses
import json
import math
import types
import typing
from typing import Any

from vae_jax.errors import ConfigError

ACTIVATIONS = ("tanh", "relu", "elu", "gelu", "softplus", "silu")
ARCHITECTURES = ("mlp", "conv", "custom")  # custom: a user's modules, VAE.from_modules (not a CLI choice)
LIKELIHOODS = ("bernoulli", "gaussian", "discretized_logistic", "discretized_logistic_mixture")
OBJECTIVES = ("elbo", "iwae")
SCHEDULES = ("constant", "cosine", "exponential", "burda")
OUTPUT_BIAS_INITS = ("zero", "data_mean")
SEED_RANGE = (-(2**63), 2**63)  # what jax.random.key accepts
MAX_COUNT = 2**31 - 1  # counts and sizes index int32 arrays (sample m is fold_in(key, m), steps, examples)
MNIST_SHAPE = (28, 28, 1)  # the default example shape (data_dim 784)
DATA_KINDS = ("binary", "uint8", "continuous")  # see vae_jax.pixels
LEGACY_DATA_KINDS = {"binarized_mnist": "binary", "mnist": "uint8", "fashion_mnist": "uint8"}


def option(default, help: str, **metadata):
    """A dataclass field with its command-line help and checks in ``metadata``."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_ok(value, hint) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return _is_number(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typing.get_origin(hint) is tuple:
        return isinstance(value, tuple) and all(_type_ok(v, typing.get_args(hint)[0]) for v in value)
    return isinstance(value, hint)


def _is_count(hint) -> bool:
    """int or tuple[int, ...], optionally | None."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = [h for h in typing.get_args(hint) if h is not type(None)] if union else [hint]
    return all(h is int or (typing.get_origin(h) is tuple and typing.get_args(h)[0] is int) for h in options)


def _describe(hint) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}
    if typing.get_origin(hint) is tuple:
        return "a list of integers"
    if typing.get_args(hint):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    return names.get(hint, str(hint))


def validate_fields(obj):
    """Checks every field of a config dataclass against its type and its ``positive``/``choices`` metadata."""
    hints = typing.get_type_hints(type(obj))
    for field in dataclasses.fields(obj):
        value, meta = getattr(obj, field.name), field.metadata
        if not _type_ok(value, hints[field.name]):
            raise ConfigError(f"{field.name} must be {_describe(hints[field.name])}, got {value!r}.")
        if value is None:
            continue
        if meta.get("positive") and not all(0 < v < math.inf for v in (value if isinstance(value, tuple) else (value,))):
            if isinstance(value, tuple):
                raise ConfigError(f"{field.name} sizes must be positive integers, got {value!r}.")
            kind = "integer" if hints[field.name] is int else "number"
            raise ConfigError(f"{field.name} must be a positive {kind}, got {value!r}.")
        if meta.get("positive") and _is_count(hints[field.name]) and \
                any(v > MAX_COUNT for v in (value if isinstance(value, tuple) else (value,))):
            raise ConfigError(f"{field.name} must be at most {MAX_COUNT:,} (counts and indices are 32-bit "
                              f"integers), got {value!r}.")
        if "range" in meta and not meta["range"][0] <= value < meta["range"][1]:
            raise ConfigError(f"{field.name} must be in [{meta['range'][0]}, {meta['range'][1]}), got {value!r}.")
        if "choices" in meta:
            unknown = [v for v in value if v not in meta["choices"]] if isinstance(value, tuple) else \
                [value] if value not in meta["choices"] else []
            if unknown:
                what = repr(unknown) if isinstance(value, tuple) else repr(value)
                raise ConfigError(f"unknown {field.name} {what}; choose from {','.join(meta['choices'])}.")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The VAE architecture and its likelihood.

    ``data_shape`` is the shape of one example, (H, W, C) for images or (D,) for vectors, and ``data_dim`` is D,
    the length of a flattened example, derived from it (give ``data_dim`` alone for vector data). The
    command line takes the shape from the training data; ``data_shape=None`` asks
    :func:`vae_jax.train_and_evaluate` to do the same. ``latent_dim`` is K. The decoder's hidden widths
    mirror the encoder's in reverse. A learned per-pixel sigma is floored at ``min_sigma``: pixels that are
    constant in the data (MNIST's borders) otherwise drive it to 0 and the density to +infinity. A fixed
    ``sigma`` may be any positive number.
    """

    data_shape: tuple[int, ...] | None = option(MNIST_SHAPE, "shape of one example: (H, W, C), or (D,) for vectors; "
                                                "None: the training data's", positive=True, cli=False)
    data_dim: int | None = option(None, "length D of a flattened example, the product of data_shape (derived)",
                                  positive=True, cli=False)
    latent_dim: int = option(50, "dimension K of z", positive=True)
    architecture: str = option("mlp", "networks: mlp (dense layers on the flattened image) or conv (strided "
                               "convolutions, then a dense layer; the decoder mirrors them)", choices=ARCHITECTURES)
    hidden: tuple[int, ...] = option((200, 200), "hidden widths of the encoder, comma-separated (the decoder "
                                     "mirrors them); conv uses the last as its dense layer", positive=True)
    channels: tuple[int, ...] = option((32, 64), "conv: filters of the encoder's stride-2 convolutions, "
                                       "comma-separated (the decoder mirrors them)", positive=True)
    modules: str | None = option(None, "custom: the user's encoder and decoder classes (VAE.from_modules)",
                                 cli=False)
    activation: str = option("tanh", "hidden activation", choices=ACTIVATIONS)
    likelihood: str = option("bernoulli", "decoder p(x|z): Bernoulli logits (binary data), Gaussian mean (a "
                             "density), or a discretized logistic (mixture) per value (8-bit data)",
                             choices=LIKELIHOODS)
    mixture_components: int = option(5, "discretized_logistic_mixture: logistic components per value",
                                     positive=True)
    sigma: float = option(1.0, "Gaussian decoder std (a number), or 'learned' for a learned per-pixel sigma",
                          positive=True)
    learn_sigma: bool = option(False, "learn a per-pixel log sigma (set by --sigma learned)", cli=False)
    min_sigma: float = option(1e-3, "floor of a learned sigma", positive=True, cli=False)
    min_log_var: float = option(-20.0, "lower bound of the encoder's log variance", cli=False)
    max_log_var: float = option(20.0, "upper bound of the encoder's log variance", cli=False)

    def __post_init__(self):
        for name in ("hidden", "data_shape", "channels"):
            if isinstance(getattr(self, name), list):  # from JSON
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.hidden == ():
            raise ConfigError("hidden must list at least one width, such as 200,200.")
        if self.channels == ():
            raise ConfigError("channels must list at least one number of filters, such as 32,64.")
        validate_fields(self)
        self._derive_data_dim()
        if self.architecture == "conv" and self.data_shape is not None and (
                len(self.data_shape) != 3 or min(self.data_shape[:2]) < 2 ** len(self.channels)):
            raise ConfigError(f"the conv architecture needs images of at least {2 ** len(self.channels)} x "
                              f"{2 ** len(self.channels)} for {len(self.channels)} stride-2 layers, got data_shape "
                              f"{self.data_shape}; use fewer --channels or --architecture mlp.")
        if self.learn_sigma and not self.min_sigma <= self.sigma:  # the floor concerns a learned sigma only
            raise ConfigError(f"a learned sigma starts at sigma = {self.sigma!r}, below its floor min_sigma = "
                              f"{self.min_sigma!r}; start it at or above the floor.")
        if not self.min_log_var < self.max_log_var:
            raise ConfigError("min_log_var must be smaller than max_log_var.")

    def _derive_data_dim(self):
        """data_dim = prod(data_shape); a data_dim given alone (older configs, vector data) sets the shape: 784 is
        MNIST's (28, 28, 1), any other D is (D,)."""
        shape, dim = self.data_shape, self.data_dim
        if dim is not None and shape == MNIST_SHAPE and dim != 784:
            shape = (dim,)  # data_dim given alone
        if shape is not None:
            if len(shape) not in (1, 3):
                raise ConfigError(f"data_shape must be (H, W, C) for images or (D,) for vectors, got {shape!r}.")
            if dim is not None and dim != math.prod(shape):
                raise ConfigError(f"data_dim {dim} is not the size of data_shape {shape!r} "
                                  f"({math.prod(shape)}); give data_shape alone.")
            dim = math.prod(shape)
            if dim > MAX_COUNT:
                raise ConfigError(f"data_shape {shape!r} has {dim:,} values, more than {MAX_COUNT:,}.")
        object.__setattr__(self, "data_shape", shape)
        object.__setattr__(self, "data_dim", dim)

    def with_data_shape(self, shape: tuple[int, ...]) -> "ModelConfig":
        """This config for examples of ``shape`` (data_dim follows)."""
        return dataclasses.replace(self, data_shape=tuple(shape), data_dim=None)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        return _from_dict(cls, data, "model")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How a model is trained; see each field's help.

    Schedules over all steps: ``constant``; ``cosine`` to 0; ``exponential`` to learning_rate * decay_rate;
    ``burda``: Burda et al. (2015)'s 8 stages i = 0..7 at learning_rate * 10^(-i/7), stage i lasting
    3^i / 3280 of the epochs, so ``epochs=3280`` is the paper's protocol exactly. Every random draw
    derives from the base key ``seed`` with ``fold_in``.
    """

    dataset: str = option("binarized_mnist", "training data: a TFDS dataset name, or an .npz file / a folder of "
                          ".npy files with arrays train [, validation, test] (see README, 'Your own data')")
    data_kind: str | None = option(None, "what the values are: binary (0/1), uint8 (levels 0..255) or continuous "
                                   "(floats in [0, 1]); default: from the data (set it for floats that are all 0/1)",
                                   choices=DATA_KINDS)
    train_split: str | None = option(None, "split to train on, TFDS syntax such as 'train[:5000]' (default: the "
                                     "dataset's own; for arrays without validation, train[:90%])")
    valid_split: str | None = option(None, "split for validation (default: the dataset's own; for arrays without "
                                     "validation, train[90%:])")
    binarize: bool = option(False, "dynamic binarization of grey levels, redrawn every step")
    epochs: int = option(10, "epochs to train in total", positive=True)
    batch_size: int = option(100, "examples per step", positive=True)
    learning_rate: float = option(1e-3, "Adam step size", positive=True)
    schedule: str = option("constant", "learning-rate schedule (burda: the paper's 8 stages, scaled to --epochs)",
                           choices=SCHEDULES)
    decay_rate: float = option(0.1, "final factor of the exponential schedule", positive=True)
    adam_eps: float = option(1e-8, "epsilon of Adam (Burda et al. used 1e-4)", positive=True)
    grad_clip: float | None = option(None, "clip gradients to this global norm (default: no clipping)",
                                     positive=True)
    objective: str = option("elbo", "training objective: the beta-weighted ELBO, or the IWAE bound",
                            choices=OBJECTIVES)
    num_samples: int = option(1, "z samples per example (k for iwae)", positive=True)
    beta: float = option(1.0, "KL weight of the elbo objective")
    kl_warmup_epochs: int = option(0, "ramp beta linearly from 0 over these epochs (0: off)")
    output_bias_init: str = option("zero", "decoder output bias at start: zero, or the logit of the training "
                                   "set's pixel means (the mean itself for Gaussian)", choices=OUTPUT_BIAS_INITS)
    seed: int = option(0, "base random seed", range=SEED_RANGE)
    checkpoint_every: int = option(1, "save every N epochs (and at the end)", positive=True)
    keep_checkpoints: int = option(3, "latest checkpoints kept (the best is kept as well)", positive=True)

    def __post_init__(self):
        validate_fields(self)
        if not 0 <= self.beta < math.inf:
            raise ConfigError(f"beta must be a non-negative finite number, got {self.beta!r}.")
        if self.kl_warmup_epochs < 0:
            raise ConfigError(f"kl_warmup_epochs must be a non-negative integer, got {self.kl_warmup_epochs!r}.")

    @property
    def extendable(self) -> bool:
        """Whether ``epochs`` may change when resuming (only the constant schedule ignores it)."""
        return self.schedule == "constant"


def _from_dict(cls, data, section: str):
    if not isinstance(data, dict):
        raise ConfigError(f"the {section!r} section must be a JSON object, got {type(data).__name__}.")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown field(s) {unknown} in the {section!r} section; known: {sorted(names)}.")
    try:
        return cls(**data)
    except ConfigError as err:
        raise ConfigError(f"{section}.{err}") from None


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a training run; saved as ``WORKDIR/config.json`` and in each checkpoint."""

    model: ModelConfig
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "train": dataclasses.asdict(self.train)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExperimentConfig":
        """Raises :class:`ConfigError` naming the section and field that is missing, unknown or invalid."""
        if not isinstance(data, dict):
            raise ConfigError(f"expected a JSON object with 'model' and 'train' sections, got {type(data).__name__}.")
        missing = [s for s in ("model", "train") if s not in data]
        if missing:
            raise ConfigError(f"missing section(s) {missing}; a run's config has 'model' and 'train'.")
        unknown = sorted(set(data) - {"model", "train"})
        if unknown:
            raise ConfigError(f"unknown section(s) {unknown}; a run's config has 'model' and 'train'.")
        train = data["train"]
        if isinstance(train, dict) and "data_kind" not in train:  # written before data kinds were recorded
            train = {**train, "data_kind": LEGACY_DATA_KINDS.get(train.get("dataset"))}
        return cls(ModelConfig.from_dict(data["model"]), _from_dict(TrainConfig, train, "train"))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ExperimentConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"not valid JSON ({err}).") from None
        return cls.from_dict(data)

    def differences(self, other: "ExperimentConfig") -> list[str]:
        """Human-readable ``section.field: theirs (saved) != mine (now)`` lines.

        ``epochs`` may differ (a run can be extended) unless the learning-rate schedule depends on it.
        """
        mine, theirs = self.to_dict(), other.to_dict()
        lines = []
        for section in mine:
            for key, value in mine[section].items():
                if not (key == "epochs" and self.train.extendable) and value != theirs[section].get(key):
                    lines.append(f"{section}.{key}: {theirs[section].get(key)!r} (saved) != {value!r} (now)")
        return lines
