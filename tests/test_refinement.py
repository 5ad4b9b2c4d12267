"""Refined posteriors reach the exact posterior where the family can represent it."""

import jax
import jax.numpy as jnp
import numpy as np

import vae_jax as vj
from vae_jax.linear_gaussian import LinearGaussian


def test_refinement_reaches_the_exact_posterior_of_a_linear_gaussian_model():
    """W with orthogonal columns: the posterior is a diagonal Gaussian, so the refined q must be it and its
    ELBO must equal log p(x). Starting far off (mean 0, log_var 0), 3000 Adam steps of 10 samples; the
    ELBO is then estimated with 20,000 samples (MC standard error < 0.01 nats at the optimum)."""
    model = LinearGaussian.orthogonal(jax.random.key(0), data_dim=6, latent_dim=3)
    x = model.sample(jax.random.key(1), 1)[0]
    refine = jax.jit(lambda key: vj.refine_posterior(key, model.log_likelihood, x, jnp.zeros(3), jnp.zeros(3), 3000,
                                                     learning_rate=3e-2))
    mean, log_var = refine(jax.random.key(2))
    exact_mean, exact_log_var = model.diagonal_posterior(x)
    np.testing.assert_allclose(mean, exact_mean, atol=0.03)
    np.testing.assert_allclose(log_var, exact_log_var, atol=0.1)
    refined_elbo = vj.elbo(jax.random.key(3), model.log_likelihood, x, mean, log_var, 20_000)
    start_elbo = vj.elbo(jax.random.key(3), model.log_likelihood, x, jnp.zeros(3), jnp.zeros(3), 20_000)
    assert float(start_elbo) < float(model.log_marginal(x)) - 1.0
    np.testing.assert_allclose(refined_elbo, model.log_marginal(x), atol=0.02)


def test_refinement_vmaps_over_examples_and_never_lowers_the_elbo_much():
    model = LinearGaussian.orthogonal(jax.random.key(4), data_dim=5, latent_dim=2)
    xs = model.sample(jax.random.key(5), 4)
    keys = jax.random.split(jax.random.key(6), 4)
    start = (jnp.zeros((4, 2)), jnp.zeros((4, 2)))
    refine = jax.vmap(lambda k, x, m, v: vj.refine_posterior(k, model.log_likelihood, x, m, v, 500, learning_rate=3e-2))
    means, log_vars = jax.jit(refine)(keys, xs, *start)
    elbo = jax.vmap(lambda x, m, v: vj.elbo(jax.random.key(7), model.log_likelihood, x, m, v, 5000))
    assert np.all(np.asarray(elbo(xs, means, log_vars)) > np.asarray(elbo(xs, *start)))


def test_evaluate_reports_refined_importance_and_the_gaps():
    from vae_jax.evaluate import evaluate

    vae = vj.VAE(vj.ModelConfig(data_dim=12, latent_dim=2, hidden=(8,)))
    params = vae.init(jax.random.key(0))
    xs = np.asarray(jax.random.bernoulli(jax.random.key(1), 0.5, (5, 12)), np.float32)
    result = evaluate(vae, params, xs, jax.random.key(2), estimators=("elbo", "importance", "importance_refined"),
                      num_samples=200, elbo_samples=200, refine_steps=200, refine_learning_rate=3e-2)
    gaps = result["gaps"]
    # The refined q is fitted to each example, so its ELBO beats the encoder's (an untrained encoder here);
    # with 200 samples the two ELBOs carry MC errors of ~0.05 nats.
    assert gaps["amortization"] > 0.1 and gaps["refined_elbo"] > gaps["amortized_elbo"]
    assert gaps["approximation"] > -0.1  # log p(x) >= any ELBO, up to MC error
    assert len(gaps["per_example"]["amortization"]) == 5
    np.testing.assert_allclose(np.mean(gaps["per_example"]["amortization"]), gaps["amortization"], rtol=1e-5)
    assert result["importance_refined"]["mean"] >= result["importance"]["mean"] - 0.05


def test_refinement_until_converged_stops_at_the_optimum_and_before_its_cap():
    """The stopping rule on the linear-Gaussian model of the first test, started far off: it stops on its own
    (before the 20,000-step cap) with the ELBO of the exact diagonal posterior, log p(x), within 0.02 nats
    (20,000-sample ELBO: MC error < 0.01; Adam's iterates still move by a few hundredths around the optimum,
    which costs the ELBO only their square). It takes refine_posterior's Adam steps (same draws): refined for
    the steps it reports, refine_posterior lands on the same q."""
    model = LinearGaussian.orthogonal(jax.random.key(0), data_dim=6, latent_dim=3)
    x = model.sample(jax.random.key(1), 1)[0]
    mean, log_var, steps = jax.jit(lambda key: vj.refine_until_converged(
        key, model.log_likelihood, x, jnp.zeros(3), jnp.zeros(3), 20_000))(jax.random.key(2))
    steps = int(steps)
    assert 1000 <= steps < 20_000 and steps % 100 == 0
    refined_elbo = vj.elbo(jax.random.key(3), model.log_likelihood, x, mean, log_var, 20_000)
    np.testing.assert_allclose(refined_elbo, model.log_marginal(x), atol=0.02)
    again = vj.refine_posterior(jax.random.key(2), model.log_likelihood, x, jnp.zeros(3), jnp.zeros(3), steps)
    np.testing.assert_allclose(again[0], mean, atol=1e-5)
    np.testing.assert_allclose(again[1], log_var, atol=1e-5)


def test_refinement_until_converged_stops_each_example_on_its_own_under_vmap():
    """Two examples, one started at its optimum and one far off: the first stops after patience + 1 windows
    of no real progress, the second runs longer; a cap of 300 steps stops both at 300."""
    model = LinearGaussian.orthogonal(jax.random.key(4), data_dim=5, latent_dim=2)
    xs = model.sample(jax.random.key(5), 2)
    at_optimum = model.diagonal_posterior(xs[0])
    means = jnp.stack([at_optimum[0], jnp.full(2, 5.0)])
    log_vars = jnp.stack([at_optimum[1], jnp.full(2, 3.0)])
    run = lambda cap: jax.jit(jax.vmap(lambda k, x, m, v: vj.refine_until_converged(
        k, model.log_likelihood, x, m, v, cap, learning_rate=1e-2, patience=3)))(
        jax.random.split(jax.random.key(6), 2), xs, means, log_vars)
    _, _, steps = run(50_000)
    assert int(steps[0]) < int(steps[1])
    assert int(steps[0]) <= 1000  # at the optimum the window means stop improving within a few windows
    _, _, capped = run(300)
    np.testing.assert_array_equal(capped, [300, 300])


def test_evaluate_refines_until_converged_with_a_patience():
    """``refine_patience`` switches importance_refined to the stopping rule: the steps taken are reported, whole
    windows, at most the cap; the refined ELBO is then at least the 100-step one's up to MC error (200 samples)."""
    from vae_jax.evaluate import evaluate

    vae = vj.VAE(vj.ModelConfig(data_dim=12, latent_dim=2, hidden=(8,)))
    params = vae.init(jax.random.key(0))
    xs = np.asarray(jax.random.bernoulli(jax.random.key(1), 0.5, (5, 12)), np.float32)
    run = lambda **kw: evaluate(vae, params, xs, jax.random.key(2), estimators=("importance_refined",),
                                num_samples=200, elbo_samples=200, refine_learning_rate=3e-2, **kw)
    fixed, converged = run(refine_steps=100), run(refine_steps=5000, refine_patience=3)
    assert fixed["importance_refined"]["refine_steps"] == 100
    steps = converged["importance_refined"]["refine_steps"]
    assert 400 <= steps <= 5000
    assert converged["gaps"]["refined_elbo"] > fixed["gaps"]["refined_elbo"] - 0.05
