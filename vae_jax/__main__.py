from vae_jax.cli import run

run()
