"""Process plumbing for run-with-kvm: the errors it reports, its overall
deadline, and children that can never outlive it.

Every child (qemu, apt-get, dpkg-deb, a directly run command) gets its own
process group, so the rig can stop it with everything it started, and
PR_SET_PDEATHSIG, so even a SIGKILLed rig leaves nothing running.
"""

import ctypes
import os
import signal
import subprocess
import time

RIG_FAILURE = 125
COMMAND_NOT_FOUND = 127

_PR_SET_PDEATHSIG = 1


class RigError(Exception):
    """The rig cannot do its job; the message says what and why."""


class TimeoutExpired(Exception):
    """The overall timeout ran out; the message says during which step."""


class Interrupted(Exception):
    """The rig got SIGINT, SIGTERM or SIGHUP."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Deadline:
    """The rig's overall time budget, shared by every step."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.start = time.monotonic()
        self.end = self.start + seconds

    def remaining(self):
        return self.end - time.monotonic()

    def expired(self):
        return self.remaining() <= 0


def _raise_interrupted(signum, _frame):
    # Later signals must not cut the clean-up short.
    for other in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(other, signal.SIG_IGN)
    raise Interrupted(signum)


def install_signal_handlers():
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupted)


def _die_with_parent(parent_pid):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died before prctl took effect.
    if os.getppid() != parent_pid:
        os._exit(RIG_FAILURE)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def start_child(argv, **kwargs):
    """Popen in a new process group that is SIGKILLed if the rig dies."""
    parent_pid = os.getpid()
    return subprocess.Popen(argv, process_group=0,  # pylint: disable=consider-using-with
                            preexec_fn=lambda: _die_with_parent(parent_pid), **kwargs)


def _signal_group(child, signum):
    try:
        os.killpg(child.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def stop_child(child, grace_seconds=3.0, first_signal=signal.SIGTERM):
    """Stops the child and everything left in its process group (also after
    the child itself exited: a background process it started must not
    stay behind)."""
    if child.poll() is None:
        _signal_group(child, first_signal)
        try:
            child.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(child, signal.SIGKILL)
    child.wait()
