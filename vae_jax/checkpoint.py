"""Orbax checkpoints of the train state, the base key and the run's config, behind a small wrapper.

Layout: ``<directory>/<step>/{state,meta}``. ``state`` holds params, optimizer state and step; ``meta``
(JSON) holds the config, the base key as key data, the epoch and its metrics. Orbax writes each
checkpoint into a temporary folder and renames it when complete, so a killed save never leaves a
checkpoint that looks complete. Orbax's own messages (tracebacks of a failed save or restore) go to a
log file, not the terminal; the caller reports the one line that matters.
"""

import contextlib
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from vae_jax.errors import CheckpointSaveError
from vae_jax.train_step import TrainState
from vae_jax.types import PRNGKey


@contextlib.contextmanager
def _stderr_to(log_path: Path | None):
    """Keeps everything written to file descriptor 2 (Python or C++) meanwhile out of the terminal and
    appends it, if there was any, to ``log_path`` (when that can be written)."""
    if log_path is None:
        yield None
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read()
            if text:
                with contextlib.suppress(OSError):  # a read-only run folder: the details are dropped
                    with open(log_path, "ab") as log:
                        log.write(text)


def _until_quiet(captured, quiet_s: float = 0.5, limit_s: float = 5.0):
    """Waits until nothing has been written to ``captured`` for ``quiet_s`` seconds (at most ``limit_s``).

    After a failed save, writes still in flight in TensorStore's threads finish after Orbax has closed
    the event loop that awaited them, and each reports "Event loop is closed" on stderr; under load that
    can take a moment. Waiting while stderr still goes to the log keeps those reports out of the terminal."""
    if captured is None:
        return
    size, quiet_since, start = -1, time.monotonic(), time.monotonic()
    while time.monotonic() - start < limit_s:
        now_size = os.fstat(captured.fileno()).st_size
        if now_size != size:
            size, quiet_since = now_size, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return
        time.sleep(0.05)


def _chain(err: BaseException):
    """``err`` and the exceptions it was raised from or during."""
    seen = []
    while err is not None and err not in seen:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def _short_cause(err: BaseException) -> str:
    """The operating system's error behind a failed save ("[Errno 28] No space left on device"), found in the
    exception chain or in TensorStore's message; else the first 200 characters of the error."""
    for e in _chain(err):
        if isinstance(e, OSError) and e.errno:
            return f"[Errno {e.errno}] {e.strerror}"
    code = re.search(r"os_error_code='?(\d+)", str(err))
    if code:
        return f"[Errno {code[1]}] {os.strerror(int(code[1]))}"
    return f"{type(err).__name__}: {str(err)[:200]}"


class Checkpointer:
    """Saves and restores training checkpoints in ``directory``.

    Keeps the ``keep`` latest checkpoints and the one with the best validation ELBO (read from each
    checkpoint's own metadata, so the rule holds across resumes).
    """

    def __init__(self, directory: str | Path, keep: int = 3, *, corrupt_dir: str | Path | None = None,
                 log_path: str | Path | None = None):
        self.directory = Path(directory).absolute()
        self.keep = keep
        self.corrupt_dir = Path(corrupt_dir) if corrupt_dir else self.directory.parent / "corrupt_checkpoints"
        self.log_path = Path(log_path) if log_path else None
        options = ocp.CheckpointManagerOptions(max_to_keep=None, enable_async_checkpointing=False, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, state: TrainState, base_key: PRNGKey, config: dict, epoch: int, metrics: dict) -> int:
        """Writes a checkpoint named by the state's step, prunes old ones, and returns the step."""
        step = int(state.step)
        meta = {
            "config": config,
            "base_key": np.asarray(jax.random.key_data(base_key)).tolist(),
            "epoch": epoch,
            "metrics": metrics,
        }
        failure = None
        with _stderr_to(self.log_path) as captured:
            try:
                self._manager.save(
                    step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                    force=True,
                )
                self._manager.wait_until_finished()
            except BaseException as err:  # a full disk, a signal: no half-written checkpoint is left behind
                failure = err
                self._discard_unfinished(step)
                _until_quiet(captured)
        if isinstance(failure, Exception):
            raise self._save_error(step, failure) from failure
        if failure is not None:
            raise failure
        self._prune()
        return step

    def _discard_unfinished(self, step: int):
        """Removes the temporary folders of a save that did not finish (Orbax renames a checkpoint into place
        only when it is complete, so a finished checkpoint is never touched)."""
        for tmp in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
            shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(Exception):
            self._manager.reload()

    def _save_error(self, step: int, err: Exception) -> CheckpointSaveError:
        cause = _short_cause(err)
        if self.log_path:
            with contextlib.suppress(OSError):
                with open(self.log_path, "a") as log:
                    log.write("".join(traceback.format_exception(err)))
        earlier = [s for s in self.steps() if s != step]
        kept = f"checkpoint {earlier[-1]} is intact" if earlier else "no earlier checkpoint exists"
        where = f" (details in {self.log_path})" if self.log_path else ""
        return CheckpointSaveError(
            f"could not write checkpoint {step} to {self.directory}: {cause}{where}; {kept}. "
            "Free disk space (or fix the folder's permissions) and run the same command again to resume.")

    def _prune(self):
        steps = self.steps()
        keep = set(steps[-self.keep:])
        ranked = self.steps_by_score()
        if ranked:
            keep.add(ranked[0])
        for step in steps:
            if step not in keep:
                self._manager.delete(step)

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def read_meta(self, step: int) -> dict[str, Any]:
        with _stderr_to(self.log_path):
            return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def steps_by_score(self, log: Callable[[str], None] | None = None) -> list[int]:
        """Steps from the best validation ELBO down; a checkpoint whose metadata cannot be read is left
        out (and reported with ``log``)."""
        scores = {}
        for step in self.steps():
            try:
                score = float(self.read_meta(step)["metrics"].get("valid_elbo", -np.inf))
                scores[step] = score if np.isfinite(score) else -np.inf  # a NaN never ranks first
            except Exception as err:
                if log is not None:
                    log(f"warning: checkpoint {step} in {self.directory} is damaged ({type(err).__name__}); "
                        "skipping it")
        return sorted(scores, key=lambda s: (-scores[s], -s))

    def best_step(self) -> int | None:
        ranked = self.steps_by_score()
        return ranked[0] if ranked else None

    def restore(self, template: TrainState, step: int) -> tuple[TrainState, PRNGKey, dict[str, Any]]:
        """Restores (state, base key, meta) of ``step`` with the structure of ``template``."""
        with _stderr_to(self.log_path):
            restored = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(template), meta=ocp.args.JsonRestore())
            )
        meta = restored["meta"]
        base_key = jax.random.wrap_key_data(np.asarray(meta["base_key"], np.uint32))
        return restored["state"], base_key, meta

    def quarantine(self, step: int) -> Path:
        """Moves a damaged checkpoint to ``corrupt_dir/<step>`` (kept for inspection)."""
        target = self.corrupt_dir / str(step)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        shutil.move(self.directory / str(step), target)
        self._manager.reload()
        return target

    def close(self):
        self._manager.close()
