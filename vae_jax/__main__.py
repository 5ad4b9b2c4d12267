import sys

from vae_jax.cli import main

sys.exit(main())
