"""Training: the jitted epoch, optimizers, non-finite steps, checkpoints and exact resume."""

import dataclasses
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vae_jax.checkpoint import Checkpointer
from vae_jax.config import ExperimentConfig, ModelConfig, TrainConfig
from vae_jax.models import VAE
from vae_jax.data import DataOptions
from vae_jax.errors import ConfigMismatchError
from vae_jax.rundir import load_train_state
from vae_jax.train_loop import train_and_evaluate
import vae_jax as vj
from vae_jax import train_step
from vae_jax.train_step import (TrainState, all_finite, kl_weight, make_optimizer, make_train_epoch,
                              noise_chunk_length)


def small_config(**train_kwargs) -> ExperimentConfig:
    kwargs = dict(train_split="train[:1000]", valid_split="validation[:200]", epochs=3, batch_size=50)
    kwargs.update(train_kwargs)
    return ExperimentConfig(ModelConfig(latent_dim=4, hidden=(32,)), TrainConfig(**kwargs))


def _toy_setup(objective="elbo", num_samples=1):
    config = ExperimentConfig(ModelConfig(data_dim=16, latent_dim=2, hidden=(8,)),
                              TrainConfig(objective=objective, num_samples=num_samples, learning_rate=1e-2))
    vae = VAE(config.model)
    optimizer = make_optimizer(config.train, 100)
    state = TrainState.create(vae.init(jax.random.key(0)), optimizer)
    # Two prototypes with 5% of the bits flipped: learnable structure (random bits would not be).
    prototypes = jnp.array([[1.0] * 8 + [0.0] * 8, [0.0] * 8 + [1.0] * 8])
    flips = jax.random.bernoulli(jax.random.key(1), 0.05, (40, 16))
    xs = jnp.abs(prototypes[jnp.arange(40) % 2] - flips)
    return config, vae, optimizer, state, xs.reshape(4, 10, 16)


@pytest.mark.parametrize("objective, k", [("elbo", 1), ("iwae", 5)])
def test_epoch_compiles_once_and_improves_the_objective(objective, k):
    config, vae, optimizer, state, batches = _toy_setup(objective, k)
    train_epoch = make_train_epoch(vae, config.train, optimizer, steps_per_epoch=4)
    first = None
    for epoch in range(15):
        state, metrics = train_epoch(state, batches, jax.random.key(2))
        first = first if first is not None else metrics
    assert train_epoch.fast._cache_size() == 1  # one compilation for all epochs
    assert train_epoch.checked._cache_size() == 0  # never needed, never compiled
    assert int(state.step) == 60 and int(metrics["first_bad_step"]) == -1
    assert metrics["loss"] < first["loss"] - 1.0
    chex.assert_tree_all_finite(state.params)


def test_non_finite_step_is_skipped_and_reported():
    config, vae, optimizer, state, batches = _toy_setup()
    bad = batches.at[2, 0, 0].set(jnp.nan)
    results = {}
    for how in ("cond", "select"):
        train_epoch = make_train_epoch(vae, config.train, optimizer, steps_per_epoch=4, skip_with=how)
        new_state, metrics = train_epoch(state, bad, jax.random.key(2))
        assert int(metrics["first_bad_step"]) == 2
        chex.assert_tree_all_finite(new_state.params)
        assert int(new_state.step) == 4
        # Steps 0-1 as in a clean epoch run with the check on every step; step 2 left the state as it was.
        checked = make_train_epoch(vae, config.train, optimizer, steps_per_epoch=4, skip_with=how,
                                   check_every_step=True)
        two, _ = checked(state, bad[:2], jax.random.key(2))
        three, _ = make_train_epoch(vae, config.train, optimizer, steps_per_epoch=4, skip_with=how)(
            state, bad[:3], jax.random.key(2))
        chex.assert_trees_all_equal(two.params, three.params)
        chex.assert_trees_all_equal(two.opt_state, three.opt_state)
        results[how] = new_state
    # Both ways of skipping give the same training.
    chex.assert_trees_all_close(results["cond"].params, results["select"].params, rtol=1e-6, atol=1e-7)


def test_optimistic_epoch_equals_the_checked_epoch_on_finite_data():
    """A clean epoch returns its fast run; the same steps run with the check on every step agree to float
    rounding (the two are compiled apart), and a NaN in the last batch sends the epoch to the checked run."""
    config, vae, optimizer, state, batches = _toy_setup()
    fast_epoch = make_train_epoch(vae, config.train, optimizer, steps_per_epoch=4)
    checked_epoch = make_train_epoch(vae, config.train, optimizer, steps_per_epoch=4, check_every_step=True)
    fast, fast_metrics = fast_epoch(state, batches, jax.random.key(2))
    checked, checked_metrics = checked_epoch(state, batches, jax.random.key(2))
    assert int(fast_metrics["first_bad_step"]) == int(checked_metrics["first_bad_step"]) == -1
    chex.assert_trees_all_close((fast.params, fast.opt_state), (checked.params, checked.opt_state), rtol=1e-5,
                                atol=1e-7)
    chex.assert_trees_all_close(fast_metrics, checked_metrics, rtol=1e-6)
    # Only the last step is bad: the result is the checked run of the first three steps, exactly.
    last_bad, metrics = fast_epoch(state, batches.at[3, 5, 0].set(jnp.inf), jax.random.key(2))
    three, _ = checked_epoch(state, batches[:3], jax.random.key(2))
    assert int(metrics["first_bad_step"]) == 3 and int(last_bad.step) == 4
    chex.assert_trees_all_equal((last_bad.params, last_bad.opt_state), (three.params, three.opt_state))


@pytest.mark.parametrize("train_kwargs", [{}, {"grad_clip": 1.0}, {"schedule": "cosine"}, {"schedule": "burda"}])
def test_a_non_finite_gradient_leaves_the_optimizer_state_non_finite(train_kwargs):
    """What the optimistic epoch relies on: after one gradient with an infinity (or a NaN), every later
    update of every configured optimizer leaves a non-finite value in the state, down to a zero last rate."""
    optimizer = make_optimizer(TrainConfig(**train_kwargs), 10)
    for bad_value in (jnp.inf, jnp.nan):
        state = TrainState.create({"w": jnp.ones(3), "b": jnp.zeros(2)}, optimizer)
        for step in range(10):
            grads = {"w": jnp.full(3, 0.5), "b": jnp.full(2, -0.5)}
            if step == 3:
                grads["w"] = grads["w"].at[1].set(bad_value)
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            state = state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state)
            assert bool(all_finite((state.params, state.opt_state))) == (step < 3), (bad_value, step)


def test_noise_is_the_documented_stream_and_does_not_depend_on_chunking(monkeypatch):
    """Example b of step t trains on the samples of elbo_terms / importance_log_marginal with key
    split(fold_in(fold_in(train_key, t), 0), B)[b]; drawing them a chunk at a time changes nothing."""
    config, vae, optimizer, state, batches = _toy_setup(objective="elbo", num_samples=3)
    train_key = jax.random.key(7)
    _, metrics = make_train_epoch(vae, config.train, optimizer, 1)(state, batches[:1], train_key)
    keys = jax.random.split(jax.random.fold_in(jax.random.fold_in(train_key, 0), 0), batches.shape[1])
    terms = [vj.elbo_terms(k, vae.likelihood_fn(state.params), x, *vae.encode(state.params, x), num_samples=3)
             for k, x in zip(keys, batches[0])]
    np.testing.assert_allclose(metrics["reconstruction"], np.mean([r for r, _ in terms]), rtol=1e-6)
    np.testing.assert_allclose(metrics["elbo"], np.mean([r - kl for r, kl in terms]), rtol=1e-6)

    whole, whole_metrics = make_train_epoch(vae, config.train, optimizer, 4)(state, batches, train_key)
    monkeypatch.setattr(train_step, "NOISE_CHUNK_BYTES", 1)  # one step's draws at a time
    per_step, step_metrics = make_train_epoch(vae, config.train, optimizer, 4)(state, batches, train_key)
    chex.assert_trees_all_close((whole.params, whole_metrics), (per_step.params, step_metrics), rtol=1e-6,
                                atol=1e-8)


def test_noise_chunk_length_divides_the_epoch_within_the_budget():
    assert noise_chunk_length(500, 20_000, budget=32 * 2**20) == 500  # the default model: one chunk an epoch
    assert noise_chunk_length(500, 10**6, budget=32 * 2**20) == 25  # IWAE k = 50: 25 steps of 1 MB
    assert noise_chunk_length(499, 10**6, budget=32 * 2**20) == 1  # a prime epoch beyond the budget: a step
    assert noise_chunk_length(12, 1, budget=100) == 12
    assert noise_chunk_length(12, 5, budget=20) == 4


def test_kl_warmup_ramps_linearly():
    config = TrainConfig(beta=2.0, kl_warmup_epochs=2)
    assert float(kl_weight(config, jnp.int32(0), 10)) == pytest.approx(2.0 * 1 / 20)
    assert float(kl_weight(config, jnp.int32(9), 10)) == pytest.approx(1.0)
    assert float(kl_weight(config, jnp.int32(500), 10)) == pytest.approx(2.0)
    assert float(kl_weight(TrainConfig(beta=0.5), jnp.int32(0), 10)) == 0.5


@pytest.mark.parametrize("schedule, final", [("constant", 1e-3), ("cosine", 0.0), ("exponential", 1e-4)])
def test_learning_rate_schedules(schedule, final):
    optimizer = make_optimizer(TrainConfig(schedule=schedule, learning_rate=1e-3, decay_rate=0.1), 100)
    params = {"w": jnp.zeros(())}
    state = optimizer.init(params)
    for _ in range(100):  # Adam's first step moves by ~lr regardless of the gradient's size
        _, state = optimizer.update({"w": jnp.ones(())}, state, params)
    updates, _ = optimizer.update({"w": jnp.ones(())}, state, params)
    assert abs(float(updates["w"])) == pytest.approx(final, abs=1e-6, rel=1e-2)


def test_gradient_clipping_is_applied():
    optimizer = make_optimizer(TrainConfig(grad_clip=1.0), 10)
    params = {"w": jnp.zeros(3)}
    clipped = optax.clip_by_global_norm(1.0).update({"w": jnp.full(3, 100.0)}, optax.EmptyState())[0]
    np.testing.assert_allclose(jnp.linalg.norm(clipped["w"]), 1.0, rtol=1e-6)
    updates, _ = optimizer.update({"w": jnp.full(3, 100.0)}, optimizer.init(params), params)
    chex.assert_tree_all_finite(updates)


def test_resume_ends_with_the_same_parameters(shared_data, data_dir, tmp_path):
    options = DataOptions(data_dir=str(data_dir), manual_dir=str(shared_data))
    train_and_evaluate(small_config(epochs=3), tmp_path / "straight", options, progress=False)
    train_and_evaluate(small_config(epochs=2), tmp_path / "resumed", options, progress=False)
    train_and_evaluate(small_config(epochs=3), tmp_path / "resumed", options, progress=False)
    straight, resumed = (load_train_state(tmp_path / name)[2] for name in ("straight", "resumed"))
    chex.assert_trees_all_equal(straight.params, resumed.params)
    chex.assert_trees_all_equal(straight.opt_state, resumed.opt_state)
    lines = [json.loads(l) for l in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2, 3]
    straight_lines = [json.loads(l) for l in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["valid_elbo"] == straight_lines[-1]["valid_elbo"]
    for key in ("train_elbo", "valid_elbo", "train_kl", "valid_reconstruction", "seconds", "examples_per_second"):
        assert key in lines[-1]


def test_changed_config_is_refused(shared_data, data_dir, tmp_path):
    options = DataOptions(data_dir=str(data_dir), manual_dir=str(shared_data))
    train_and_evaluate(small_config(epochs=1), tmp_path / "run", options, progress=False)
    with pytest.raises(ConfigMismatchError, match="learning_rate"):
        train_and_evaluate(small_config(epochs=1, learning_rate=0.5), tmp_path / "run", options, progress=False)
    train_and_evaluate(small_config(epochs=1, schedule="cosine"), tmp_path / "cos", options, progress=False)
    with pytest.raises(ConfigMismatchError, match="epochs"):  # a cosine schedule depends on the length
        train_and_evaluate(small_config(epochs=2, schedule="cosine"), tmp_path / "cos", options, progress=False)


def test_checkpoints_keep_latest_and_best(shared_data, data_dir, tmp_path):
    options = DataOptions(data_dir=str(data_dir), manual_dir=str(shared_data))
    config = small_config(epochs=5, keep_checkpoints=2)
    train_and_evaluate(config, tmp_path / "run", options, progress=False)
    ckpt = Checkpointer(tmp_path / "run" / "checkpoints", keep=2)
    steps = ckpt.steps()
    metrics = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    best = max(metrics, key=lambda m: m["valid_elbo"])["step"]
    assert steps[-2:] == [80, 100] and best in steps and len(steps) <= 3
    assert ckpt.best_step() == best
    meta = ckpt.read_meta(100)
    # The saved config is the one given, completed from the data (its kind; the shape was given).
    completed = dataclasses.replace(config, train=dataclasses.replace(config.train, data_kind="binary"))
    assert ExperimentConfig.from_dict(meta["config"]) == completed and meta["epoch"] == 5
    ckpt.close()


def test_burda_schedule_has_the_papers_stages():
    from vae_jax.train_step import burda_schedule

    schedule = burda_schedule(1e-3, 3280)  # one step per epoch: the paper's 3280 epochs
    # Stage i covers epochs [(3^i - 1) / 2, (3^(i+1) - 1) / 2) at 1e-3 * 10^(-i/7).
    for i in range(8):
        first, last = (3**i - 1) // 2, (3 ** (i + 1) - 1) // 2 - 1
        for step in (first, last):
            assert float(schedule(step)) == pytest.approx(1e-3 * 10 ** (-i / 7), rel=1e-5), (i, step)
    assert float(burda_schedule(1e-3, 328)(327)) == pytest.approx(1e-4, rel=1e-5)  # rescaled, same end


def test_output_bias_starts_at_the_data_mean():
    vae = VAE(ModelConfig(data_dim=6, latent_dim=2, hidden=(4,)))
    mean = jnp.array([0.0, 0.1, 0.5, 0.9, 1.0, 0.25])
    params = vae.with_output_bias(vae.init(jax.random.key(0)), mean)
    bias = params["decoder"]["params"]["MLP_0"]["Dense_1"]["bias"]
    np.testing.assert_allclose(jax.nn.sigmoid(bias), jnp.clip(mean, 1e-4, 1 - 1e-4), rtol=1e-4)
    # With the last hidden layer's weights at zero the decoder outputs exactly the mean image.
    params["decoder"]["params"]["MLP_0"]["Dense_1"]["kernel"] = jnp.zeros((4, 6))
    np.testing.assert_allclose(vae.mean_image(params, jnp.ones(2)), jnp.clip(mean, 1e-4, 1 - 1e-4), rtol=1e-4)
    gaussian = VAE(ModelConfig(data_dim=6, latent_dim=2, hidden=(4,), likelihood="gaussian"))
    bias = gaussian.with_output_bias(gaussian.init(jax.random.key(0)), mean)["decoder"]["params"]["MLP_0"]["Dense_1"]["bias"]
    np.testing.assert_allclose(bias, mean)


def test_tensorboard_has_the_metrics_once_each_after_a_resume(shared_data, data_dir, tmp_path):
    """Read back with TensorBoard's own reader: the scalars equal metrics.jsonl, and the epoch a crashed run
    had logged past its last checkpoint appears once after the resume (TensorBoard purges the old one)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    options = DataOptions(data_dir=str(data_dir), manual_dir=str(shared_data))
    workdir = tmp_path / "run"
    config = small_config(epochs=3, checkpoint_every=2)
    train_and_evaluate(config, workdir, options, progress=False, tensorboard_images_every=2)
    ckpt = Checkpointer(workdir / "checkpoints")
    ckpt._manager.delete(ckpt.steps()[-1])  # as if killed after epoch 3 was logged, before it was saved
    ckpt.close()
    train_and_evaluate(config, workdir, options, progress=False, tensorboard_images_every=2)
    assert len(list((workdir / "tensorboard").iterdir())) == 2  # one event file per run
    events = EventAccumulator(str(workdir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    for key, tag in (("train_elbo", "train/elbo"), ("valid_kl", "valid/kl"), ("seconds", "speed/seconds")):
        logged = events.Scalars(tag)
        assert [e.step for e in logged] == [1, 2, 3]
        np.testing.assert_allclose([e.value for e in logged], [m[key] for m in metrics], rtol=1e-6)  # float32
    assert [(e.step, e.width, e.height) for e in events.Images("samples")] == [(2, 233, 233), (3, 233, 233)]
