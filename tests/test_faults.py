"""Faults: kill -9 during training and during a checkpoint save, Ctrl-C, SIGTERM, a closed terminal (SIGHUP),
a full disk, corrupt checkpoints, NaN."""

import json
import signal
import subprocess
import sys
import textwrap
import time

import chex
import numpy as np
import pytest

from vae_jax.checkpoint import Checkpointer
from vae_jax.errors import CheckpointSaveError
from vae_jax.rundir import load_run

pytestmark = pytest.mark.slow


def _train_cmd(workdir, shared_data, data_dir, epochs, *extra):
    return [sys.executable, "-m", "vae_jax", "train", "--workdir", str(workdir), "--train-split", "train[:5000]",
            "--valid-split", "validation[:500]", "--epochs", str(epochs), "--latent-dim", "8", "--no-progress",
            "--manual-dir", str(shared_data), "--data-dir", str(data_dir), *extra]


def _epochs_logged(workdir):
    return [json.loads(line)["epoch"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_kill_9_at_random_points_then_resume_equals_uninterrupted(shared_data, data_dir, tmp_path):
    epochs = 8
    reference = tmp_path / "reference"
    subprocess.run(_train_cmd(reference, shared_data, data_dir, epochs), check=True, capture_output=True)
    killed = tmp_path / "killed"
    rng = np.random.default_rng(0)
    for _ in range(3):
        proc = subprocess.Popen(_train_cmd(killed, shared_data, data_dir, epochs), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(4.0, 10.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    subprocess.run(_train_cmd(killed, shared_data, data_dir, epochs), check=True, capture_output=True)
    _, _, params_ref, step_ref = load_run(reference)
    _, _, params_killed, step_killed = load_run(killed)
    assert step_ref == step_killed
    chex.assert_trees_all_equal(params_ref, params_killed)
    assert _epochs_logged(killed) == list(range(1, epochs + 1))


SAVER = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp
    from vae_jax.checkpoint import Checkpointer
    from vae_jax.train_step import TrainState
    ckpt = Checkpointer(sys.argv[1], keep=1000)
    key = jax.random.key(0)
    for step in range(1, 10_000):
        params = {"w": jnp.full((2_000_000,), float(step))}  # 8 MB: a save takes long enough to be hit
        state = TrainState(step=jnp.int32(step), params=params, opt_state=())
        ckpt.save(state, key, {"note": "test"}, step, {"valid_elbo": -float(step)})
        print(step, flush=True)
""")


def test_kill_9_during_checkpoint_save_never_leaves_a_bad_checkpoint(tmp_path):
    import jax.numpy as jnp

    from vae_jax.train_step import TrainState

    directory = tmp_path / "ckpts"
    rng = np.random.default_rng(1)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(directory)], stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()  # at least one save has completed: kill during later ones
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ckpt = Checkpointer(directory, keep=1000)
    template = TrainState(step=jnp.int32(0), params={"w": jnp.zeros((2_000_000,))}, opt_state=())
    steps = ckpt.steps()
    assert steps
    for step in steps:  # every checkpoint that is listed restores exactly what was saved
        state, _, meta = ckpt.restore(template, step)
        assert int(state.step) == step and meta["epoch"] == step
        assert float(state.params["w"].min()) == float(state.params["w"].max()) == float(step)
    ckpt.close()


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(shared_data, data_dir, tmp_path):
    workdir = tmp_path / "run"
    # 1000 epochs (~0.1 s each), so the run cannot finish between its first metrics line and the signal
    # even on a loaded machine; the signal stops it long before.
    # Ctrl-C at a terminal: SIGINT with Python's default handler. Set it in the child explicitly, since a
    # test run launched as a background job (`cmd &` in a script) passes SIGINT down ignored, and Python
    # then keeps ignoring it (as a background `vae-jax train` should: stop that one with SIGTERM).
    cmd = _train_cmd(workdir, shared_data, data_dir, 1000, "--checkpoint-every", "5000")
    cmd[1:3] = ["-c", "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                "sys.argv[0] = 'vae-jax'; from vae_jax.cli import main; sys.exit(main())"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (workdir / "metrics.jsonl").exists() or not (workdir / "metrics.jsonl").read_text():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    sent_after = len(_epochs_logged(workdir))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    log = workdir / "vae-jax.log"
    assert proc.returncode == 130, (f"exit {proc.returncode}; SIGINT sent after epoch {sent_after}, "
                                    f"{len(_epochs_logged(workdir))} epochs logged\nstdout: {out}\nstderr: {err}\n"
                                    f"vae-jax.log: {log.read_text() if log.exists() else '-'}")
    assert "interrupted" in err and "Traceback" not in err
    ckpt = Checkpointer(workdir / "checkpoints")
    assert ckpt.steps() and ckpt.steps()[-1] % 50 == 0  # a whole number of 50-step epochs
    ckpt.close()


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(shared_data, data_dir, tmp_path):
    straight, damaged = tmp_path / "straight", tmp_path / "damaged"
    subprocess.run(_train_cmd(straight, shared_data, data_dir, 3), check=True, capture_output=True)
    subprocess.run(_train_cmd(damaged, shared_data, data_dir, 2), check=True, capture_output=True)
    latest = damaged / "checkpoints" / "100" / "state"
    for path in latest.rglob("*"):
        if path.is_file() and path.stat().st_size > 0:
            path.write_bytes(b"garbage")
    result = subprocess.run(_train_cmd(damaged, shared_data, data_dir, 3), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "checkpoint 100 could not be restored" in result.stdout + result.stderr
    assert "resuming from checkpoint 50" in result.stdout + result.stderr
    chex.assert_trees_all_equal(load_run(straight)[2], load_run(damaged)[2])


def test_non_finite_loss_stops_with_a_message_and_saves_no_nan(shared_data, data_dir, tmp_path):
    workdir = tmp_path / "run"
    cmd = _train_cmd(workdir, shared_data, data_dir, 3, "--likelihood", "gaussian", "--sigma", "0.001",
                     "--learning-rate", "1e30")
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 2
    assert "non-finite loss or gradient at step" in result.stderr and "learning rate" in result.stderr
    assert "Traceback" not in result.stderr
    ckpt = Checkpointer(workdir / "checkpoints")
    assert ckpt.steps() == []  # the first epoch already failed: nothing was saved
    ckpt.close()


def _wait_for_epochs(workdir, proc, count, timeout=180):
    deadline = time.time() + timeout
    while not (workdir / "metrics.jsonl").exists() or len(_epochs_logged(workdir)) < count:
        assert time.time() < deadline and proc.poll() is None, proc.poll()
        time.sleep(0.2)


def test_lock_refuses_a_second_writer_and_sigterm_saves_and_exits_143(shared_data, data_dir, tmp_path):
    workdir = tmp_path / "run"
    cmd = _train_cmd(workdir, shared_data, data_dir, 200, "--checkpoint-every", "1000")
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_epochs(workdir, first, 1)
    second = subprocess.run(cmd, capture_output=True, text=True)
    assert second.returncode == 2 and f"in use by process {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    first.send_signal(signal.SIGTERM)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 143, err
    assert "SIGTERM" in out and "run the same command again to resume" in out and "Traceback" not in err
    epochs = _epochs_logged(workdir)
    assert epochs == list(range(1, len(epochs) + 1))  # each epoch once: the second writer wrote nothing
    ckpt = Checkpointer(workdir / "checkpoints")
    assert ckpt.read_meta(ckpt.steps()[-1])["epoch"] == epochs[-1]  # the last completed epoch was saved
    ckpt.close()


def test_lock_of_a_killed_process_is_taken_over(shared_data, data_dir, tmp_path):
    workdir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from vae_jax.rundir import RunFolder\n"
                               "with RunFolder(sys.argv[1]).lock():\n    print('locked', flush=True); time.sleep(600)",
                               str(workdir)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert "process" in (workdir / ".lock").read_text()  # the dead holder's note is still there
    result = subprocess.run(_train_cmd(workdir, shared_data, data_dir, 1), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_refused_config_and_corrupt_checkpoint_print_no_library_noise(shared_data, data_dir, tmp_path):
    workdir = tmp_path / "run"
    subprocess.run(_train_cmd(workdir, shared_data, data_dir, 2), check=True, capture_output=True)
    (workdir / "config.json").unlink()
    refused = subprocess.run(_train_cmd(workdir, shared_data, data_dir, 3, "--latent-dim", "4"),  # the last wins
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "model.latent_dim: 8 (saved) != 4 (now)" in refused.stderr
    assert len((refused.stdout + refused.stderr).splitlines()) < 10 and "Traceback" not in refused.stderr
    latest = workdir / "checkpoints" / "100" / "state"
    for path in latest.rglob("*"):
        if path.is_file() and path.stat().st_size > 0:
            path.write_bytes(b"garbage")
    resumed = subprocess.run(_train_cmd(workdir, shared_data, data_dir, 3), capture_output=True, text=True)
    assert resumed.returncode == 0 and "checkpoint 100 could not be restored" in resumed.stdout
    assert len((resumed.stdout + resumed.stderr).splitlines()) < 10 and "Traceback" not in resumed.stderr


def test_failed_save_keeps_library_tracebacks_out_of_the_terminal(tmp_path, capfd):
    import os

    import jax
    import jax.numpy as jnp

    from vae_jax.train_step import TrainState

    ckpt = Checkpointer(tmp_path / "checkpoints", log_path=tmp_path / "vae-jax.log")

    def full_disk_save(*args, **kwargs):
        os.write(2, b"Traceback (most recent call last):\n  ... 300 lines of library noise\n")
        raise OSError(28, "No space left on device")

    ckpt._manager.save = full_disk_save
    state = TrainState(step=jnp.int32(1), params={"w": jnp.zeros(3)}, opt_state=())
    with pytest.raises(CheckpointSaveError, match="No space left"):
        ckpt.save(state, jax.random.key(0), {}, 1, {})
    assert "library noise" not in capfd.readouterr().err
    assert "library noise" in (tmp_path / "vae-jax.log").read_text()


def _start(cmd, sighup="SIG_DFL"):
    """``vae-jax`` in its own session (a signal sent to it reaches nothing else), with SIGHUP's disposition set
    first: a test run under nohup would otherwise pass SIGHUP down ignored."""
    assert cmd[1:3] == ["-m", "vae_jax"]
    cmd = [cmd[0], "-c", f"import signal, sys; signal.signal(signal.SIGHUP, signal.{sighup}); "
           "sys.argv[0] = 'vae-jax'; from vae_jax.cli import run; run()", *cmd[3:]]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_closed_terminal_saves_the_last_epoch_and_nohup_keeps_training(shared_data, data_dir, tmp_path):
    hung, nohup = tmp_path / "hung", tmp_path / "nohup"
    # 1000 epochs of ~0.1 s and checkpoints only at the end: the run cannot finish, or save, before the signal.
    procs = {}
    for workdir, sighup in ((hung, "SIG_DFL"), (nohup, "SIG_IGN")):  # one after the other: one prepares the data
        procs[workdir] = _start(_train_cmd(workdir, shared_data, data_dir, 1000, "--checkpoint-every", "5000"), sighup)
        _wait_for_epochs(workdir, procs[workdir], 1)
    for proc in procs.values():
        proc.send_signal(signal.SIGHUP)
    out, err = procs[hung].communicate(timeout=120)
    assert procs[hung].returncode == 129, err
    assert "Traceback" not in err and "interrupted by SIGHUP" in err
    assert "interrupted (SIGHUP)" in (hung / "vae-jax.log").read_text()  # where a user finds it afterwards
    epochs = _epochs_logged(hung)
    ckpt = Checkpointer(hung / "checkpoints")
    assert ckpt.read_meta(ckpt.steps()[-1])["epoch"] == epochs[-1]  # the last completed epoch was saved
    ckpt.close()
    # Started ignoring SIGHUP (nohup): it trains on, and SIGTERM still stops it with a save.
    at_signal = len(_epochs_logged(nohup))
    _wait_for_epochs(nohup, procs[nohup], at_signal + 3)
    procs[nohup].send_signal(signal.SIGTERM)
    procs[nohup].communicate(timeout=120)
    assert procs[nohup].returncode == 143
    # A hangup during evaluate writes no result: it is complete or absent.
    evaluate = _start([sys.executable, "-m", "vae_jax", "evaluate", "--workdir", str(hung), "--split", "test[:2000]",
                       "--num-samples", "100000", "--no-progress", "--manual-dir", str(shared_data), "--data-dir",
                       str(data_dir)])
    while "evaluating checkpoint" not in evaluate.stdout.readline():
        assert evaluate.poll() is None
    time.sleep(1.0)
    evaluate.send_signal(signal.SIGHUP)
    _, err = evaluate.communicate(timeout=120)
    assert evaluate.returncode == 129 and "nothing was written" in err and "Traceback" not in err
    assert not list(hung.glob("eval_*.json")) and not list(hung.glob(".eval_*"))


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (as root), so a checkpoint save runs out of space; grow it with ``remount(size)``."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    remount = lambda size: subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)
    yield mount, remount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_during_a_checkpoint_is_one_line_and_resume_works(shared_data, data_dir, small_disk):
    mount, remount = small_disk
    workdir = mount / "run"
    # A 784-64-4 model: a checkpoint (parameters and Adam's two moments) takes about 1.2 MB, so the
    # first fits in 2 MiB and the second does not.
    cmd = lambda epochs: _train_cmd(workdir, shared_data, data_dir, epochs, "--hidden", "64", "--latent-dim", "4")
    first = subprocess.run(cmd(3), capture_output=True, text=True)
    assert first.returncode == 2, first.stdout + first.stderr
    assert "Traceback" not in first.stderr and len(first.stderr.strip().splitlines()) == 1
    assert "could not write checkpoint 100" in first.stderr and "[Errno 28] No space left on device" in first.stderr
    # The OS error, not TensorStore's whole message (which file failed depends on timing: an OCDBT manifest or
    # a lock file); that message and the traceback go to vae-jax.log.
    assert "os_error_code" not in first.stderr
    log = (workdir / "vae-jax.log").read_text()
    assert "Traceback" in log and "No space left on device" in log
    assert "checkpoint 50 is intact" in first.stderr and "vae-jax.log" in first.stderr
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["50"]  # no temporary folder left
    remount("64M")  # disk space freed
    resumed = subprocess.run(cmd(3), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from checkpoint 50" in resumed.stdout
    assert _epochs_logged(workdir) == [1, 2, 3]


def test_a_signal_inside_signals_deferred_waits_for_the_block_to_end():
    """How training keeps metrics.jsonl and the state it saves on a stop in step: a SIGINT sent inside the block
    is delivered after it, so both steps inside happen."""
    import os

    from vae_jax.signals import signals_deferred

    steps = []
    with pytest.raises(KeyboardInterrupt):
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            steps.append("record")
            steps.append("state")
    assert steps == ["record", "state"]
