"""run-with-kvm's command line, the environment it hands the command, and
the choice between running directly and booting the outer machine."""

import fcntl
import os
import re
import shutil

from rig_process import RigError

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

DEFAULT_TIMEOUT = 1800.0
DEFAULT_CPUS = 2
DEFAULT_MEMORY_MIB = 3072

# Inside the outer machine $TMPDIR is on a tmpfs: 9p cannot hold sockets,
# FIFOs or device nodes.
INNER_TMPDIR = "/run/kvmini-rig-tmp"

# How the outer machine caches the 9p share (mount -t 9p cache=...).
SHARE_CACHE_MODES = ("loose", "mmap", "none")

# QEMU's TCG runs the outer vCPUs on one host thread each (multi) or all on
# one thread (single).
TCG_THREAD_MODES = ("multi", "single")

# Passed to the command besides PATH and HOME; more with --env.
PASSED_NAMES = ("HOME", "PATH", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ")
PASSED_PREFIXES = ("KVMINI_", "CTEST_", "GTEST_", "LC_")

USAGE = f"""\
usage: run-with-kvm [OPTIONS] [--] COMMAND [ARG...]

Runs COMMAND where /dev/kvm is hardware virtualization: directly if this
host has svm/vmx and a usable /dev/kvm, else inside an outer machine (QEMU
TCG emulating an AMD-V host) that sees this host's files.

options:
  --timeout SECONDS  overall limit, outer boot included (default
                     $KVMINI_RIG_TIMEOUT or {DEFAULT_TIMEOUT:g}); on expiry everything
                     is stopped and the rig exits 125
  --env NAME[=VALUE] also pass NAME into the outer machine (its value here,
                     or VALUE); repeatable. Always passed: {', '.join(PASSED_NAMES[:4])},
                     {', '.join(PASSED_NAMES[4:])}, TERM when stdout is a terminal,
                     and every {'*, '.join(PASSED_PREFIXES)}* variable. Run
                     directly, the command gets this whole environment
  --cpus N           outer machine's vCPUs (default {DEFAULT_CPUS})
  --memory MIB       outer machine's RAM (default {DEFAULT_MEMORY_MIB})
  --9p-cache MODE    how the outer machine caches this host's files: loose
                     (default, fast; changes made on this host during the run
                     may go unseen inside), mmap or none (coherent, ~10x
                     slower program start); also $KVMINI_RIG_9P_CACHE
  --tcg-threads MODE multi (default: one host thread per outer vCPU) or
                     single (all outer vCPUs on one thread: rules out races
                     in QEMU's multi-threaded TCG when chasing a freeze;
                     far too slow for test suites); also
                     $KVMINI_RIG_TCG_THREADS
  --cache DIR        kernel+initramfs cache (default $KVMINI_RIG_CACHE or
                     <repo>/build/rig-cache)
  --outer            boot the outer machine even on a host with svm/vmx
                     (also KVMINI_RIG_MODE=outer)
  --direct           never boot it; fail if /dev/kvm is not hardware
                     virtualization (also KVMINI_RIG_MODE=direct)
  --prepare          only fill the cache (download and build), run nothing
  --verbose          show the outer machine's console on stderr
  --help             this text

exit status: the command's; 125 the rig failed (no qemu, no kernel
package, no kvm_amd or /dev/kvm inside, boot did not reach the command,
timeout, bad option); 127 command not found; 128+N the rig got signal N.
The command's stdin is /dev/null; its stdout and stderr both come out on
the rig's stdout.
"""


class UsageError(Exception):
    pass


class Options:  # pylint: disable=too-few-public-methods,too-many-instance-attributes
    def __init__(self):
        self.timeout = DEFAULT_TIMEOUT
        self.extra_env = {}
        self.cpus = DEFAULT_CPUS
        self.memory_mib = DEFAULT_MEMORY_MIB
        self.cache_dir = os.environ.get("KVMINI_RIG_CACHE") or os.path.join(REPO, "build", "rig-cache")
        self.mode = os.environ.get("KVMINI_RIG_MODE", "auto")
        self.share_cache = os.environ.get("KVMINI_RIG_9P_CACHE", "loose")
        self.tcg_threads = os.environ.get("KVMINI_RIG_TCG_THREADS", "multi")
        self.prepare = False
        self.verbose = False
        self.help = False
        self.command = []


def _number(flag, text, kind):
    try:
        value = kind(text)
    except ValueError:
        raise UsageError(f"{flag} wants a number, got '{text}'") from None
    if value <= 0:
        raise UsageError(f"{flag} must be positive, got '{text}'")
    return value


def parse(argv):
    """Options come first; the first other word (or what follows --) starts
    the command, so the command's own flags are never taken as ours."""
    options = Options()
    if os.environ.get("KVMINI_RIG_TIMEOUT"):
        options.timeout = _number("KVMINI_RIG_TIMEOUT", os.environ["KVMINI_RIG_TIMEOUT"], float)
    with_value = {"--timeout", "--env", "--cpus", "--memory", "--cache", "--9p-cache", "--tcg-threads"}
    index = 0
    while index < len(argv):
        flag = argv[index]
        if flag == "--":
            index += 1
            break
        if not flag.startswith("--"):
            break
        value = None
        if "=" in flag and flag.split("=", 1)[0] in with_value:
            flag, value = flag.split("=", 1)
        elif flag in with_value:
            if index + 1 >= len(argv):
                raise UsageError(f"{flag} needs a value")
            index += 1
            value = argv[index]
        index += 1
        if flag == "--timeout":
            options.timeout = _number(flag, value, float)
        elif flag == "--env":
            name, _, given = value.partition("=")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise UsageError(f"--env wants NAME or NAME=VALUE, got '{value}'")
            options.extra_env[name] = given if "=" in value else os.environ.get(name)
        elif flag == "--cpus":
            options.cpus = _number(flag, value, int)
        elif flag == "--memory":
            options.memory_mib = _number(flag, value, int)
        elif flag == "--cache":
            options.cache_dir = value
        elif flag == "--9p-cache":
            options.share_cache = value
        elif flag == "--tcg-threads":
            options.tcg_threads = value
        elif flag in ("--outer", "--direct"):
            options.mode = flag[2:]
        elif flag in ("--prepare", "--verbose", "--help"):
            setattr(options, flag[2:], True)
        else:
            raise UsageError(f"unknown option {flag}")
    options.command = argv[index:]
    if options.mode not in ("auto", "outer", "direct"):
        raise UsageError(f"KVMINI_RIG_MODE must be auto, outer or direct, not '{options.mode}'")
    if options.share_cache not in SHARE_CACHE_MODES:
        raise UsageError(f"--9p-cache must be one of {', '.join(SHARE_CACHE_MODES)}, not '{options.share_cache}'")
    if options.tcg_threads not in TCG_THREAD_MODES:
        raise UsageError(f"--tcg-threads must be one of {', '.join(TCG_THREAD_MODES)}, "
                         f"not '{options.tcg_threads}'")
    options.cache_dir = os.path.abspath(options.cache_dir)
    if not options.command and not (options.prepare or options.help):
        raise UsageError("no command given")
    return options


def command_environment(options):
    """The variables the command gets, wherever it runs."""
    environment = {name: value for name, value in os.environ.items()
                   if name in PASSED_NAMES or name.startswith(PASSED_PREFIXES)}
    if os.isatty(1) and "TERM" in os.environ:
        environment["TERM"] = os.environ["TERM"]
    return _with_extra(environment, options.extra_env)


def direct_environment(options):
    """Run directly, the command keeps the whole environment."""
    return _with_extra(dict(os.environ), options.extra_env)


def _with_extra(environment, extra):
    """Applies --env: a name unset here is removed."""
    for name, value in extra.items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    return environment


def command_exists(command, environment):
    """Checked here before any boot: the outer machine sees the same files."""
    return shutil.which(command, path=environment.get("PATH", os.defpath)) is not None


def _cpu_flags():
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def hardware_virtualization():
    """(True, why) when svm/vmx is present and /dev/kvm answers."""
    flags = _cpu_flags() & {"svm", "vmx"}
    if not flags:
        return False, "the CPU shows no svm/vmx: /dev/kvm here is not hardware virtualization"
    kvm_get_api_version = 0xAE00
    try:
        descriptor = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as error:
        return False, f"the CPU has {'/'.join(sorted(flags))} but /dev/kvm is not usable ({error.strerror})"
    try:
        version = fcntl.ioctl(descriptor, kvm_get_api_version)
    except OSError as error:
        return False, f"/dev/kvm does not answer KVM_GET_API_VERSION ({error.strerror})"
    finally:
        os.close(descriptor)
    return version == 12, f"{'/'.join(sorted(flags))} and /dev/kvm API version {version}"


def choose_mode(options):
    """'direct' or 'outer', and why."""
    if options.mode == "outer":
        return "outer", "--outer / KVMINI_RIG_MODE=outer"
    usable, reason = hardware_virtualization()
    if usable:
        return "direct", reason
    if options.mode == "direct":
        raise RigError(f"--direct asked for, but {reason}")
    return "outer", reason
