"""Named random streams: every key of a run derives from its base key as ``fold_in(base_key, STREAM)``.

The ids are fixed forever (changing one changes every result drawn from it), and written only here, so
adding a stream never shifts another.
"""

# Training (from the run's base key, ``seed``).
INIT_STREAM = 0  # parameter initialization
DATA_STREAM = 1  # epoch e is shuffled with fold_in(data key, e)
TRAIN_STREAM = 2  # step t draws its samples from fold_in(train key, t)
EVAL_STREAM = 3  # validation ELBO during training; the evaluation key of ``vae-jax evaluate``
BINARIZE_STREAM = 4  # the fixed binarization of grey-level validation data
SAMPLES_STREAM = 5  # the fixed latent samples of the TensorBoard sample grids
DEQUANTIZE_STREAM = 6  # the fixed dequantization of 8-bit validation data (and, from the evaluation key, of
#                        evaluated data) for continuous likelihoods; example i: fold_in(that key, i)

# Estimators draw from fold_in(evaluation key, stream) with the stream of their spec
# (vae_jax.evaluate.SPECS); example i of an estimator uses fold_in(estimator key, i).
