"""run-with-kvm's outer machine: writes the job for outer-init.sh, boots
QEMU, streams the command's output, and turns the markers on the console
into an exit status."""

import collections
import fcntl
import os
import re
import resource
import secrets
import select
import shlex
import shutil
import socket
import subprocess
import tempfile
import time

from rig_process import RigError, TimeoutExpired, start_child, stop_child
from rig_options import INNER_TMPDIR

# Inside the outer machine these are its own mounts, not this host's files.
NOT_SHARED = ("/proc", "/sys", "/dev", "/run")
STALE_JOB_SECONDS = 60
# outer-init.sh says ALIVE every 5 s while the command runs. Silence this
# long means the outer machine froze (seen with QEMU TCG + nested SVM); a
# slow command alone never stops the heartbeat. The self-test shortens it.
HEARTBEAT_LIMIT_SECONDS = float(os.environ.get("KVMINI_RIG_HEARTBEAT_LIMIT", "90"))
CONSOLE_LINES_KEPT = 60
# The firmware clears the screen: escape sequences the console may carry.
TERMINAL_CONTROL = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|c)")


def _under(path, roots):
    return any(path == root or path.startswith(root + "/") for root in roots)


def qemu_binary():
    qemu = os.environ.get("KVMINI_RIG_QEMU") or shutil.which("qemu-system-x86_64")
    if not qemu or not os.access(qemu, os.X_OK):
        raise RigError(
            f"{qemu or 'qemu-system-x86_64'} not found: this host has no hardware virtualization, "
            "so the rig boots an outer machine with QEMU; install it with "
            "'apt-get install qemu-system-x86'")
    return qemu


def job_script(command, environment, cwd):
    """The script outer-init.sh runs with /bin/sh inside the chroot, with an
    empty environment."""
    quote = shlex.quote
    lines = ["# Written by run-with-kvm for one run."]
    lines += [f"export {name}={quote(value)}" for name, value in sorted(environment.items())]
    lines.append(f"export TMPDIR={INNER_TMPDIR} KVMINI_RIG_INSIDE=1")
    # The caller's umask and open-file limit, not the outer init's.
    umask = os.umask(0)
    os.umask(umask)
    open_files, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    lines.append(f"umask {umask:04o}")
    if open_files != resource.RLIM_INFINITY:
        lines.append(f"ulimit -n {open_files} 2>/dev/null")
    cd_failed = quote(f"run-with-kvm: cannot enter the working directory {cwd} inside the outer machine")
    lines.append(f"cd {quote(cwd)} || {{ echo {cd_failed} >&2; exit 125; }}")
    lines.append("set -- " + " ".join(quote(word) for word in command))
    lines.append('command -v "$1" >/dev/null 2>&1 || '
                 '{ echo "run-with-kvm: command not found inside the outer machine: $1" >&2; exit 127; }')
    lines.append('exec "$@"')
    return "\n".join(lines) + "\n"


class JobFolder:
    """A folder on the 9p share holding one run's job script. A lock on it
    marks it alive, so a later run can remove what a killed run left."""

    def __init__(self, cache_dir):
        self.jobs = os.path.join(cache_dir, "jobs")
        self.path = None
        self.lock = None

    def __enter__(self):
        os.makedirs(self.jobs, exist_ok=True)
        self._sweep_stale()
        self.path = tempfile.mkdtemp(prefix="job-", dir=self.jobs)
        self.lock = open(os.path.join(self.path, "lock"), "wb")  # pylint: disable=consider-using-with
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        return self

    def __exit__(self, *_):
        self.lock.close()
        shutil.rmtree(self.path, ignore_errors=True)

    def _sweep_stale(self):
        for name in os.listdir(self.jobs):
            folder = os.path.join(self.jobs, name)
            try:
                if time.time() - os.path.getmtime(folder) < STALE_JOB_SECONDS:
                    continue
                with open(os.path.join(folder, "lock"), "ab") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its run is alive
            except OSError:
                pass  # no lock file: a half-made folder
            shutil.rmtree(folder, ignore_errors=True)


def monitor_path(nonce):
    """QEMU's human monitor socket for one run: asked for the outer vCPUs'
    registers when the outer machine freezes (short path: sun_path limit)."""
    return os.path.join(tempfile.gettempdir(), f"kvmini-rig-{nonce}.monitor")


def outer_cpu_state(path, seconds=5.0):
    """What QEMU's monitor says about the outer vCPUs, or why it could not."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as monitor:
            monitor.settimeout(seconds)
            monitor.connect(path)
            monitor.sendall(b"info registers -a\n")
            received = b""
            end = time.monotonic() + seconds
            while time.monotonic() < end and received.count(b"(qemu)") < 2:
                chunk = monitor.recv(65536)
                if not chunk:
                    break
                received += chunk
    except OSError as error:
        return f"(QEMU's monitor did not answer: {error})"
    text = TERMINAL_CONTROL.sub("", received.decode(errors="replace")).replace("\r", "")
    # General registers, segments and control registers; not the FPU/SIMD state.
    lines = [line for line in text.split("\n")
             if line.strip() and "(qemu)" not in line
             and not line.startswith(("QEMU ", "FPR", "YMM", "XMM", "FCW", "DR", "MXCSR"))]
    return "\n".join(lines)


def qemu_command(qemu, options, entry, console_fd, output_fd, append, monitor):
    return [
        qemu, "-name", "kvmini-rig",
        "-M", "pc", "-accel", f"tcg,thread={options.tcg_threads}", "-cpu", "max",
        "-smp", str(options.cpus), "-m", str(options.memory_mib),
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-kernel", os.path.join(entry, "kernel"), "-initrd", os.path.join(entry, "initrd.img"),
        "-append", append,
        "-chardev", f"file,id=console,path=/proc/self/fd/{console_fd}", "-serial", "chardev:console",
        "-chardev", f"file,id=output,path=/proc/self/fd/{output_fd}", "-serial", "chardev:output",
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,multidevs=remap",
        "-monitor", f"unix:{monitor},server=on,wait=off",
    ]


def _write_all(data):
    while data:
        written = os.write(1, data)
        data = data[written:]


class Session:  # pylint: disable=too-many-instance-attributes
    """One boot: reads the three pipes until qemu is gone."""

    def __init__(self, nonce, note, verbose):
        self.marker = f"{nonce} "
        self.note = note
        self.verbose = verbose
        self.started = time.monotonic()
        self.ready_after = None
        self.last_heartbeat = None
        self.exit_status = None
        self.failure = None
        self.console_tail = collections.deque(maxlen=CONSOLE_LINES_KEPT)
        self.qemu_messages = []
        self.partial_console = b""
        self.output_broken = False

    def elapsed(self):
        return time.monotonic() - self.started

    def on_console(self, data):
        lines = (self.partial_console + data).split(b"\n")
        self.partial_console = lines.pop()
        for raw in lines:
            self.on_console_line(raw.decode(errors="replace").rstrip("\r"))

    def on_console_line(self, line):
        line = TERMINAL_CONTROL.sub("", line)
        position = line.find(self.marker)
        if position >= 0:
            event = line[position + len(self.marker):]
            ready = re.fullmatch(r"READY(?: ([0-9.]+))?", event)
            if event == "ALIVE":
                self.last_heartbeat = time.monotonic()
            elif ready:
                self.ready_after = self.elapsed()
                self.last_heartbeat = time.monotonic()
                kernel = f"; its kernel and init took {float(ready.group(1)):.1f} s" if ready.group(1) else ""
                self.note(f"outer machine ready in {self.ready_after:.1f} s (qemu start to command start{kernel})")
            elif event.startswith("EXIT rc="):
                self.exit_status = int(event[len("EXIT rc="):])
            elif event.startswith("FAIL "):
                self.failure = event[len("FAIL "):]
            return
        self.console_tail.append(line)
        if self.verbose:
            self.note(f"console: {line}")

    def on_output(self, data):
        if self.output_broken:
            return
        try:
            _write_all(data)
        except BrokenPipeError:
            self.output_broken = True  # keep draining so the guest never blocks

    def on_qemu_message(self, data):
        text = data.decode(errors="replace")
        self.qemu_messages.append(text)
        if self.verbose:
            self.note(f"qemu: {text.rstrip()}")

    def frozen_for(self):
        """Seconds without a heartbeat while the command runs, or 0."""
        if self.last_heartbeat is None or self.exit_status is not None:
            return 0.0
        return time.monotonic() - self.last_heartbeat

    def diagnostics(self):
        parts = []
        if self.qemu_messages:
            parts.append("qemu said:\n" + "".join(self.qemu_messages).rstrip())
        if self.console_tail:
            parts.append("last lines of the outer machine's console:\n" + "\n".join(self.console_tail))
        return ("\n" + "\n".join(parts)) if parts else ""


def _pump(session, pipes, qemu, deadline, monitor):
    """Reads until every pipe is closed (qemu exited) or time runs out."""
    while pipes:
        remaining = deadline.remaining()
        if remaining <= 0:
            where = (f"while the command was running (outer machine ready after {session.ready_after:.1f} s)"
                     if session.ready_after is not None else "while the outer machine was booting")
            raise TimeoutExpired(where)
        if session.frozen_for() > HEARTBEAT_LIMIT_SECONDS:
            raise RigError(f"the outer machine stopped responding: no heartbeat for "
                           f"{session.frozen_for():.0f} s while the command was running (QEMU's "
                           f"emulation froze; not the command's doing){session.diagnostics()}\n"
                           f"the outer vCPUs' registers at that moment:\n{outer_cpu_state(monitor)}")
        readable, _, _ = select.select(list(pipes), [], [], min(remaining, 1.0))
        for descriptor in readable:
            data = os.read(descriptor, 65536)
            if not data:
                os.close(descriptor)
                del pipes[descriptor]
            else:
                pipes[descriptor](data)
    try:
        qemu.wait(timeout=max(deadline.remaining(), 0.1))
    except subprocess.TimeoutExpired:
        raise TimeoutExpired("while qemu was shutting down") from None


def run(options, environment, entry, deadline, note):
    """Boots the outer machine around the command; returns its exit status."""
    qemu = qemu_binary()
    cwd = os.getcwd()
    if _under(cwd, NOT_SHARED):
        raise RigError(f"the working directory {cwd} is not shared with the outer machine "
                       f"({', '.join(NOT_SHARED)} are its own there); run from elsewhere")
    if _under(options.cache_dir, NOT_SHARED) or any(c.isspace() or c in "'\"" for c in options.cache_dir):
        raise RigError(f"the cache folder {options.cache_dir} must not be under {', '.join(NOT_SHARED)} "
                       "nor contain spaces or quotes: the outer machine reads the job from it")
    with JobFolder(options.cache_dir) as job:
        with open(os.path.join(job.path, "job.sh"), "w", encoding="utf-8") as script:
            script.write(job_script(options.command, environment, cwd))
        nonce = secrets.token_hex(8)
        monitor = monitor_path(nonce)
        append = " ".join([
            "console=ttyS0", "quiet", "panic=-1", "mitigations=off", "nowatchdog", "rdinit=/init",
            f"kvmini_rig.nonce={nonce}", f"kvmini_rig.job={job.path}",
            f"kvmini_rig.tty={1 if os.isatty(1) else 0}", f"kvmini_rig.9p_cache={options.share_cache}",
        ])
        console_read, console_write = os.pipe()
        output_read, output_write = os.pipe()
        session = Session(nonce, note, options.verbose)
        try:
            child = start_child(qemu_command(qemu, options, entry, console_write, output_write, append,
                                             monitor),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, pass_fds=(console_write, output_write))
        except OSError as error:
            os.close(console_read)
            os.close(output_read)
            raise RigError(f"cannot start {qemu}: {error}") from error
        finally:
            os.close(console_write)
            os.close(output_write)
        messages = os.dup(child.stdout.fileno())
        child.stdout.close()
        pipes = {console_read: session.on_console, output_read: session.on_output,
                 messages: session.on_qemu_message}
        try:
            _pump(session, pipes, child, deadline, monitor)
        finally:
            stop_child(child, grace_seconds=1.0)
            if os.path.exists(monitor):
                os.unlink(monitor)
            for descriptor in pipes:
                os.close(descriptor)
    return _verdict(session, child.returncode, note)


def _verdict(session, qemu_status, note):
    if session.exit_status is not None:
        note(f"command exited with status {session.exit_status} after "
             f"{session.elapsed() - session.ready_after:.1f} s; outer machine ran {session.elapsed():.1f} s")
        return session.exit_status
    if session.failure:
        raise RigError(f"the outer machine could not run the command: {session.failure}"
                       f"{session.diagnostics()}")
    if session.ready_after is None:
        raise RigError(f"the outer machine did not reach the command (qemu exited with status "
                       f"{qemu_status} after {session.elapsed():.1f} s){session.diagnostics()}")
    raise RigError(f"the outer machine stopped while the command was running (qemu exited with "
                   f"status {qemu_status}){session.diagnostics()}")
