"""The errors vae-jax raises for mistakes a user can fix: bad options, data, files and run folders.

Every one derives from :class:`UserError`, which the command line turns into a one-line message and
exit code 2. Their messages say what went wrong and what to do about it. Errors in invalid arguments
also derive from ``ValueError``, so library code that catches ``ValueError`` keeps working.
"""


class UserError(Exception):
    """Something the user can fix; the message says what to do."""


class ConfigError(UserError, ValueError):
    """An option, configuration field or argument has an invalid value."""


class BackendError(UserError):
    """JAX cannot start the platform (CPU, GPU, TPU) the environment asks for."""


class ResourceError(UserError, ValueError):
    """A count or size that would need more memory than the machine has, found before any work."""


class DataError(UserError, ValueError):
    """Data that does not suit the model: wrong dimension, NaN, grey levels for a Bernoulli decoder."""


class DataFileError(UserError):
    """A dataset file is missing, truncated, damaged or fails its checksum."""


class RunFolderError(UserError):
    """A run folder is missing, damaged, or holds something other than what was asked for."""


class ConfigMismatchError(RunFolderError):
    """A run folder holds a run whose configuration differs from the one asked for."""


class RunLockedError(RunFolderError):
    """Another live process is writing to the run folder."""


class CheckpointError(RunFolderError):
    """No usable checkpoint."""


class CheckpointSaveError(RunFolderError):
    """A checkpoint could not be written (a full disk, no permission); the earlier ones are intact."""


class NonFiniteError(UserError):
    """Training produced a non-finite loss or gradient."""


class Interrupted(KeyboardInterrupt):
    """A command was stopped by a signal (SIGTERM or SIGHUP, see :mod:`vae_jax.signals`); training saves its
    last completed epoch first."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

