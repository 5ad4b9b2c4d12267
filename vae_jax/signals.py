"""Stop signals as exceptions, so long work can save what it has before it exits.

SIGTERM (a scheduler's stop, ``kill PID``) and SIGHUP (the terminal closed, an SSH connection dropped)
would otherwise end the process at once, losing every epoch since the last periodic checkpoint. Inside
:func:`stop_signals_raise` each raises :class:`vae_jax.errors.Interrupted` in the main thread, as Ctrl-C
raises ``KeyboardInterrupt``: training saves its last completed epoch, commands that compute one result
write nothing (a result is written whole at the end, or not at all), and the exit code is 128 + the
signal number (143 for SIGTERM, 129 for SIGHUP). A signal the process was started ignoring stays
ignored: ``nohup vae-jax train ...`` goes on when its terminal closes, as nohup intends.
"""

import contextlib
import os
import signal

from vae_jax.errors import Interrupted

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _detach_from_terminal():
    """Points stdout and stderr that go to a terminal at /dev/null: after a hangup the terminal is gone,
    and a message written to it would fail (EIO) in the middle of saving."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (1, 2):
            with contextlib.suppress(OSError):
                if os.isatty(fd):
                    os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _raise_interrupted(signum, frame):
    for other in STOP_SIGNALS:  # one stop is enough: a second signal must not cut the save of the first short
        signal.signal(other, signal.SIG_IGN)
    if signum == signal.SIGHUP:
        _detach_from_terminal()
    raise Interrupted(signum)


@contextlib.contextmanager
def _handled_by(signums, handler):
    """Within the block ``handler`` handles each of ``signums`` except those ignored on purpose (SIG_IGN, as
    under nohup) or not set from Python; yields the handlers it replaced ({signum: handler}) and puts them back
    after. Outside the main thread (where Python cannot set handlers) it changes nothing."""
    previous = {}
    try:
        for signum in signums:
            if signal.getsignal(signum) not in (signal.SIG_IGN, None):
                previous[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield previous
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def stop_signals_raise():
    """Within the block, SIGTERM and SIGHUP raise :class:`Interrupted`; the previous handlers come back
    after it. Outside the main thread (where Python cannot set handlers) it changes nothing."""
    with _handled_by(STOP_SIGNALS, _raise_interrupted):
        yield


def signal_of(interrupt: KeyboardInterrupt) -> signal.Signals:
    """The signal behind an interruption: the one an :class:`Interrupted` names, else SIGINT (Ctrl-C)."""
    return signal.Signals(getattr(interrupt, "signum", signal.SIGINT))


@contextlib.contextmanager
def signals_deferred():
    """Within the block, SIGINT, SIGTERM and SIGHUP are only noted; the first that arrived goes to its handler
    when the block ends. For a few steps that must happen together (a state and its record). Outside the main
    thread (where Python cannot set handlers) it changes nothing."""
    arrived = []
    with _handled_by((signal.SIGINT, *STOP_SIGNALS), lambda signum, frame: arrived.append(signum)) as previous:
        yield
    if arrived:
        signum, handler = arrived[0], previous[arrived[0]]
        if callable(handler):
            handler(signum, None)
        else:  # the default action (SIG_DFL): send it again, now that it is restored
            os.kill(os.getpid(), signum)
