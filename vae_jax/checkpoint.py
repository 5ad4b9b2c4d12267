"""Orbax checkpoints of the train state, the base key and the run's config, behind a small wrapper.

Layout: ``WORKDIR/checkpoints/<step>/{state,meta}``. ``state`` holds params, optimizer state and step;
``meta`` (JSON) holds the config, the base key as key data, the epoch and its metrics. Orbax writes
each checkpoint into a temporary folder and renames it when complete, so a killed save never
leaves a checkpoint that looks complete.
"""

import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from vae_jax.train_step import TrainState
from vae_jax.types import PRNGKey


class CheckpointError(Exception):
    """No usable checkpoint; the message says what to do."""


class Checkpointer:
    """Saves and restores training checkpoints in ``directory``.

    Keeps the ``keep`` latest checkpoints and the one with the best validation ELBO.
    """

    def __init__(self, directory: str | Path, keep: int = 3):
        policy = ocp.checkpoint_managers.AnyPreservationPolicy([
            ocp.checkpoint_managers.LatestN(n=keep),
            ocp.checkpoint_managers.BestN(get_metric_fn=lambda m: m["valid_elbo"], n=1),
        ])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy, enable_async_checkpointing=False, create=True
        )
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, state: TrainState, base_key: PRNGKey, config: dict, epoch: int, metrics: dict) -> int:
        """Writes a checkpoint named by the state's step and returns that step."""
        step = int(state.step)
        meta = {
            "config": config,
            "base_key": np.asarray(jax.random.key_data(base_key)).tolist(),
            "epoch": epoch,
            "metrics": metrics,
        }
        self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            metrics={"valid_elbo": float(metrics.get("valid_elbo", -np.inf))},
            force=True,
        )
        self._manager.wait_until_finished()
        return step

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def read_meta(self, step: int) -> dict[str, Any]:
        return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def best_step(self) -> int | None:
        scores = {s: self.read_meta(s)["metrics"].get("valid_elbo", -np.inf) for s in self.steps()}
        return max(scores, key=scores.get) if scores else None

    def restore(self, template: TrainState, step: int) -> tuple[TrainState, PRNGKey, dict[str, Any]]:
        """Restores (state, base key, meta) of ``step`` with the structure of ``template``."""
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(template), meta=ocp.args.JsonRestore())
        )
        meta = restored["meta"]
        base_key = jax.random.wrap_key_data(np.asarray(meta["base_key"], np.uint32))
        return restored["state"], base_key, meta

    def quarantine(self, step: int) -> Path:
        """Moves a damaged checkpoint to ``<workdir>/corrupt_checkpoints/<step>`` (kept for inspection)."""
        target = self.directory.parent / "corrupt_checkpoints" / str(step)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        shutil.move(self.directory / str(step), target)
        self._manager.reload()
        return target

    def close(self):
        self._manager.close()
