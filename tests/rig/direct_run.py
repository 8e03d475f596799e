"""run-with-kvm on a host with hardware virtualization: the command runs
here, with the rig's whole environment (plus --env settings), under the
same timeout and clean-up rules as in the outer machine."""

import subprocess

from rig_process import TimeoutExpired, start_child, stop_child


def run(command, environment, deadline):
    child = start_child(command, stdin=subprocess.DEVNULL, env=environment)
    try:
        status = child.wait(timeout=max(deadline.remaining(), 0.01))
        # Killed by a signal: report it the way a shell does.
        return 128 - status if status < 0 else status
    except subprocess.TimeoutExpired:
        raise TimeoutExpired("while the command was running") from None
    finally:
        stop_child(child)
