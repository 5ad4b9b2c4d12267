"""The run folder: the one module that knows its layout.

    WORKDIR/
      config.json             the run's ExperimentConfig (each checkpoint keeps its own copy too)
      data_source.json        where the data came from (data dir, manual dir, an array file and its fingerprints),
                              so later commands need not repeat it and a changed array file is noticed
      metrics.jsonl           one JSON object per completed epoch, one line each
      tensorboard/            the same curves and sample grids as TensorBoard event files
      checkpoints/<step>/     Orbax checkpoints: the latest few and the best by validation ELBO
      corrupt_checkpoints/    checkpoints that failed their integrity check, set aside for inspection
      eval_<split>.json       results of ``vae-jax evaluate``, one file per split expression
      vae-jax.log             details (library tracebacks) of errors kept out of the terminal
      .lock                   held by the process that is training; names it

Files are replaced atomically (written beside, then renamed); metrics lines are appended whole, and a
torn last line (a crash or a full disk mid-write) is dropped, with a message, when the run resumes.
"""

import contextlib
import datetime
import fcntl
import json
import math
import os
import socket
import sys
from pathlib import Path
from typing import Callable, NamedTuple

import jax

from vae_jax.checkpoint import Checkpointer
from vae_jax.config import ExperimentConfig
from vae_jax.data import DataOptions, dataset_source
from vae_jax.errors import CheckpointError, ConfigError, DataError, RunFolderError, RunLockedError
from vae_jax.models import VAE
from vae_jax.train_step import TrainState, make_optimizer
from vae_jax.types import Params


def write_atomic(path: Path, text: str):
    """Replaces ``path`` with ``text`` so that a reader sees the old file or the new one, never a part.

    A write that fails (a full disk) leaves the old file as it was and no temporary file; the error names
    ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError) and str(path) not in str(err):
            raise type(err)(err.errno, f"could not write {path}: {err.strerror or err}") from err
        raise


def _finite_or_none(value):
    """Non-finite floats (an undefined standard error, an infinite k-hat) become None, as JavaScript's
    ``JSON.stringify`` does: bare NaN and Infinity are not JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def to_json(value, **kwargs) -> str:
    """Strict JSON (RFC 8259) of ``value``: every NaN or infinity is written as ``null``."""
    return json.dumps(_finite_or_none(value), allow_nan=False, **kwargs)


def write_json(path: Path, value):
    """``value`` as strict, indented JSON (:func:`to_json`), written atomically (:func:`write_atomic`)."""
    write_atomic(path, to_json(value, indent=2) + "\n")


def split_file_name(split: str) -> str:
    """A file-name form of a TFDS split expression, distinct for distinct expressions.

    ``test`` -> ``test``, ``test[:500]`` -> ``test_to500``, ``test[5:]`` -> ``test_5to``,
    ``test[-5:]`` -> ``test_m5to``, ``test[80%:]`` -> ``test_80pctto``; other characters are hex-escaped.
    """
    tokens = {":": "to", "-": "m", "%": "pct", "[": "_", "]": ""}
    return "".join(c if c.isalnum() and c.isascii() else tokens.get(c, f"x{ord(c):02x}") for c in split)


class RunFolder:
    """A run folder at ``path`` (which need not exist yet)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_path = self.path / "config.json"
        self.data_source_path = self.path / "data_source.json"
        self.metrics_path = self.path / "metrics.jsonl"
        self.checkpoints_dir = self.path / "checkpoints"
        self.corrupt_dir = self.path / "corrupt_checkpoints"
        self.log_path = self.path / "vae-jax.log"
        self.tensorboard_dir = self.path / "tensorboard"
        self.lock_path = self.path / ".lock"

    def check_not_a_file(self):
        """Raises :class:`RunFolderError` when the path is an existing file, not a folder."""
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"{self.path} is a file, not a run folder; give --workdir a folder (new or a "
                                 "previous run's).")

    def create(self):
        self.check_not_a_file()
        self.path.mkdir(parents=True, exist_ok=True)

    def checkpointer(self, keep: int = 3) -> Checkpointer:
        return Checkpointer(self.checkpoints_dir, keep=keep, corrupt_dir=self.corrupt_dir, log_path=self.log_path)

    def has_checkpoints(self) -> bool:
        return self.checkpoints_dir.is_dir() and any(p.name.isdigit() for p in self.checkpoints_dir.iterdir())

    # --- the configuration and the data source -------------------------------------------------------
    def read_config(self) -> ExperimentConfig | None:
        """The saved config, or None when there is none; a damaged file is named in the error."""
        if not self.config_path.exists():
            return None
        try:
            return ExperimentConfig.from_json(self.config_path.read_text())
        except (ConfigError, UnicodeDecodeError) as err:
            raise RunFolderError(
                f"{self.config_path} is not a valid run configuration: {err} Fix the file, or delete it: "
                "training then checks the options against the config stored in each checkpoint."
            ) from None

    def require_config(self) -> ExperimentConfig:
        self.check_not_a_file()
        config = self.read_config()
        if config is None:
            raise RunFolderError(f"{self.path} is not a vae-jax run folder (no config.json); train one with "
                                 f"'vae-jax train --workdir {self.path}'.")
        return config

    def write_config(self, config: ExperimentConfig):
        write_atomic(self.config_path, config.to_json() + "\n")

    def read_data_source(self, log: Callable[[str], None] | None = print) -> DataOptions | None:
        """The recorded data and manual folders, or None when nothing is recorded (older runs).

        Each folder is recorded twice, absolute and relative to the run folder; the first of the two that
        exists is used, so a run folder finds its data after either the run folder or the whole tree
        (a repository with a shipped run) has moved. A damaged file is reported with ``log`` and ignored.
        """
        if not self.data_source_path.exists():
            return None
        try:
            recorded = json.loads(self.data_source_path.read_text())
            relative = recorded.get("relative_to_run_folder") or {}
            folder = lambda name: self._existing_folder(recorded.get(name), relative.get(name))
            return DataOptions(data_dir=folder("data_dir"), manual_dir=folder("manual_dir"))
        except (OSError, ValueError, AttributeError, TypeError) as err:
            if log is not None:
                log(f"warning: {self.data_source_path} cannot be read ({type(err).__name__}: {err}); ignoring it. "
                    "Pass --manual-dir / --data-dir, or delete the file (train writes it again).")
            return None

    def _existing_folder(self, *paths: str | None) -> str | None:
        """The first of ``paths`` (relative ones resolved against the run folder) that exists, else the first."""
        candidates = [str(self.path / p) for p in paths if p is not None]  # an absolute p stays itself
        return next((p for p in candidates if Path(p).is_dir()), candidates[0] if candidates else None)

    def write_data_source(self, options: DataOptions, dataset: str | None = None, fingerprints: dict | None = None):
        """Records ``options``' folders, absolute and relative to the run folder (see :meth:`read_data_source`),
        and for an array file its path (both ways too) and ``fingerprints`` (:meth:`check_data_unchanged`)."""
        options = options.absolute()
        relative = lambda p: None if p is None else os.path.relpath(p, self.path.absolute())
        arrays = dataset if fingerprints and dataset_source(dataset) == "arrays" else None
        write_json(self.data_source_path, {
            "data_dir": options.data_dir, "manual_dir": options.manual_dir, "dataset": arrays,
            "relative_to_run_folder": {"data_dir": relative(options.data_dir),
                                       "manual_dir": relative(options.manual_dir), "dataset": relative(arrays)},
            "fingerprints": fingerprints or None})

    def _read_data_source_json(self) -> dict:
        try:
            recorded = json.loads(self.data_source_path.read_text())
            return recorded if isinstance(recorded, dict) else {}
        except (OSError, ValueError):
            return {}  # read_data_source says so

    def data_options(self, given: DataOptions) -> DataOptions:
        """``given`` options where set, the recorded data source elsewhere."""
        return given.merged_over(self.read_data_source())

    def dataset(self, config: ExperimentConfig) -> str:
        """Where the run's data is: an array file at its recorded path, or relative to the run folder when only
        that exists (the tree was moved); else ``config.train.dataset`` (a dataset name)."""
        recorded = self._read_data_source_json()
        relative = (recorded.get("relative_to_run_folder") or {}).get("dataset")
        if not recorded.get("dataset"):
            return config.train.dataset
        candidates = [recorded["dataset"]] + ([str(self.path / relative)] if relative else [])
        return next((p for p in candidates if Path(p).exists()), config.train.dataset)

    def check_data_unchanged(self, fingerprints: dict, allow_changed: bool, log: Callable[[str], None] = print):
        """Raises :class:`DataError` when an array file's splits differ from those the run recorded
        (shape, dtype or content), unless ``allow_changed``: then it warns and goes on."""
        recorded = self._read_data_source_json().get("fingerprints") or {}
        changed = [split for split in fingerprints if split in recorded and recorded[split] != fingerprints[split]]
        if not changed:
            return
        describe = lambda fp: f"{tuple(fp.get('shape', ()))} {fp.get('dtype')}, sha256 {str(fp.get('sha256'))[:12]}"
        lines = "; ".join(f"{split}: {describe(recorded[split])} when the run was made, {describe(fingerprints[split])} "
                          "now" for split in changed)
        if allow_changed:
            log(f"warning: the data changed since {self.path} was made ({lines}); using it anyway "
                "(--allow-changed-data)")
            self.append_log(f"data changed since the run was made, used with --allow-changed-data: {lines}")
            return
        raise DataError(f"the data of {self.path} changed since the run was made ({lines}). Restore the file the run "
                        "was made with, or pass --allow-changed-data to use the new one anyway.")

    # --- metrics -------------------------------------------------------------------------------------
    def read_metrics(self, log: Callable[[str], None] | None = None) -> list[dict]:
        """The epochs' records. Lines that do not parse (a torn write) are dropped and, with ``log``,
        the file is repaired and the user told."""
        if not self.metrics_path.exists():
            return []
        records, torn = [], 0
        for line in self.metrics_path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                torn += line.strip() != ""
        if torn and log is not None:
            self._write_metrics(records)
            log(f"dropped {torn} incomplete line(s) from {self.metrics_path} (a write cut short by a crash or "
                "a full disk); the epochs they described are trained again")
        return records

    def keep_metrics_through(self, epoch: int, log: Callable[[str], None]):
        """Drops records of epochs after ``epoch`` (their work is being redone) and any torn line."""
        records = self.read_metrics(log)
        kept = [r for r in records if r.get("epoch", 0) <= epoch]
        if len(kept) != len(records):
            self._write_metrics(kept)

    def _write_metrics(self, records: list[dict]):
        write_atomic(self.metrics_path, "".join(to_json(r) + "\n" for r in records))

    def append_metrics(self, record: dict):
        """Appends one whole line; if the write fails (a full disk), the file is cut back to its old end."""
        line = (to_json(record) + "\n").encode()
        fd = os.open(self.metrics_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            try:
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(f"short write to {self.metrics_path}")
            except OSError:
                os.ftruncate(fd, end)
                raise
        finally:
            os.close(fd)

    def append_log(self, message: str):
        """Appends a dated line to ``vae-jax.log`` (best effort: a read-only folder drops it)."""
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        with contextlib.suppress(OSError):
            with open(self.log_path, "a") as log:
                log.write(f"{stamp} {message}\n")

    # --- results -------------------------------------------------------------------------------------
    def result_path(self, split: str) -> Path:
        return self.path / f"eval_{split_file_name(split)}.json"

    # --- the lock ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self):
        """Holds the folder's write lock; raises :class:`RunLockedError` naming the live holder.

        An OS file lock (``flock``): it dies with its process, so a lock left by a killed run is free.
        """
        self.create()
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
                raise RunLockedError(f"{self.path} is in use by {holder}; wait for it to finish or stop it, "
                                     "or use another --workdir.") from None
            started = datetime.datetime.now().isoformat(timespec="seconds")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()} (since {started}: "
                          f"{' '.join(sys.argv)[:300]})\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock


class Run(NamedTuple):
    """A trained run loaded from its folder."""

    config: ExperimentConfig
    vae: VAE
    params: Params
    step: int


def load_run(workdir: str | Path, which: str = "latest", log: Callable[[str], None] = print, *,
             vae: VAE | None = None) -> Run:
    """(config, vae, params, checkpoint step) of a trained run folder.

    ``which`` is ``"latest"`` or ``"best"`` (highest validation ELBO). A checkpoint that cannot be
    restored is skipped with a message (``log``) and the next one is tried. A run of a user's own modules
    (``VAE.from_modules``, trained with :func:`vae_jax.fit`) needs ``vae=`` the same model: modules cannot be
    written into config.json; its config must equal the run's.
    """
    config, vae, state, step = load_train_state(workdir, which, log, vae=vae)
    return Run(config, vae, state.params, step)


def _model_for(config: ExperimentConfig, vae: VAE | None, folder: "RunFolder") -> VAE:
    if vae is None:
        if config.model.architecture == "custom":
            raise RunFolderError(f"{folder.path} is a run of your own modules ({config.model.modules}), which "
                                 "config.json cannot hold: load it from Python with load_run(workdir, vae=VAE."
                                 "from_modules(...)) built as for training (the command line cannot load it).")
        return VAE(config.model)
    if vae.config != config.model:
        diffs = [f"model.{k}: {v!r} (saved) != {getattr(vae.config, k)!r} (given)"
                 for k, v in config.model.to_dict().items() if getattr(vae.config, k) != v]
        raise RunFolderError(f"the vae given is not the model of {folder.path}:\n  " + "\n  ".join(diffs))
    return vae


def load_train_state(workdir: str | Path, which: str = "latest", log: Callable[[str], None] = print, *,
                     vae: VAE | None = None):
    """(config, vae, train state, checkpoint step): :func:`load_run` with the optimizer state too."""
    folder = RunFolder(workdir)
    config = folder.require_config()
    vae = _model_for(config, vae, folder)
    template = TrainState.create(vae.init(jax.random.key(0)), make_optimizer(config.train, 1))
    ckpt = folder.checkpointer(config.train.keep_checkpoints)
    try:
        candidates = ckpt.steps_by_score(log) if which == "best" else list(reversed(ckpt.steps()))
        if not candidates:
            raise CheckpointError(f"{workdir} has no checkpoint yet; run 'vae-jax train --workdir {workdir}' first.")
        for step in candidates:
            try:
                state, _, _ = ckpt.restore(template, step)
                return config, vae, state, step
            except Exception as err:  # a damaged checkpoint: say so and use the next one
                log(f"warning: checkpoint {step} of {workdir} could not be restored ({type(err).__name__}); "
                    "skipping it")
        raise CheckpointError(f"no checkpoint of {workdir} could be restored (details in {folder.log_path}).")
    finally:
        ckpt.close()
