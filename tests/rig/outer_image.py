"""The outer machine's kernel and initramfs for run-with-kvm, built from
Debian packages and cached.

The cache entry is keyed by the kernel package and version, the
busybox-static version and a hash of the rig's own recipe (init script,
module list, builder code), so a package update or an edit of the rig
builds a new entry. Entries
are built in a private folder under an exclusive lock and renamed into
place, so concurrent runs never see half an entry.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import kernel_image
from rig_process import RigError, TimeoutExpired, start_child, stop_child

HERE = os.path.dirname(os.path.abspath(__file__))
INIT_SCRIPT = os.path.join(HERE, "outer-init.sh")

# What the outer machine needs as modules: the PCI transport for the 9p
# device, 9p itself, and AMD-V. Their dependencies are resolved from each
# module's own .modinfo, so a kernel update that adds one still works.
ROOT_MODULES = ["virtio_pci", "9pnet_virtio", "9p", "kvm_amd"]

KERNEL_METAPACKAGE = "linux-image-amd64"
BUSYBOX_PACKAGE = "busybox-static"
BUSYBOX_BINARY = "/bin/busybox"
APT_LISTS = "/var/lib/apt/lists"


def run_tool(argv, deadline, what, **kwargs):
    """Runs a helper (apt-get, dpkg-deb) within the deadline; it dies with
    us and is killed if the deadline passes."""
    try:
        child = start_child(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)
    except FileNotFoundError as error:
        raise RigError(f"{what}: {argv[0]} is not installed") from error
    try:
        output, _ = child.communicate(timeout=max(deadline.remaining(), 0.1))
    except subprocess.TimeoutExpired as error:
        raise TimeoutExpired(f"while {what}") from error
    finally:
        stop_child(child)
    text = output.decode(errors="replace")
    if child.returncode != 0:
        raise RigError(f"{what} failed (exit {child.returncode}):\n{text.strip()}")
    return text


def candidate_version(package, deadline):
    text = run_tool(["apt-cache", "policy", package], deadline, f"asking apt about {package}")
    match = re.search(r"^\s*Candidate:\s*(\S+)", text, re.M)
    if not match or match.group(1) == "(none)":
        raise RigError(
            f"apt knows no installable version of {package}; run 'apt-get update' "
            "(the rig takes the outer machine's kernel from Debian's packages)")
    return match.group(1)


def resolve_kernel_package(deadline):
    """Returns (package, version) of the generic kernel linux-image-amd64
    currently points to."""
    meta_version = candidate_version(KERNEL_METAPACKAGE, deadline)
    text = run_tool(["apt-cache", "show", f"{KERNEL_METAPACKAGE}={meta_version}"], deadline,
                    f"reading {KERNEL_METAPACKAGE} {meta_version}")
    match = re.search(r"^Depends:.*?\b(linux-image-[0-9][^\s,]*-amd64)\s*\(=\s*([^)\s]+)\)", text, re.M)
    if not match:
        raise RigError(f"cannot find the kernel package {KERNEL_METAPACKAGE} {meta_version} depends on")
    return match.group(1), match.group(2)


def remembered_kernel_package(cache_dir, deadline):
    """resolve_kernel_package(), remembered until apt's package lists
    change: each apt-cache call costs about half a second."""
    memo = os.path.join(cache_dir, "resolved.json")
    lists_stamp = os.stat(APT_LISTS).st_mtime_ns if os.path.isdir(APT_LISTS) else 0
    try:
        with open(memo, encoding="utf-8") as memo_file:
            remembered = json.load(memo_file)
        if remembered["apt_lists"] == lists_stamp:
            return remembered["package"], remembered["version"]
    except (OSError, ValueError, KeyError):
        pass
    package, version = resolve_kernel_package(deadline)
    fresh = memo + f".{os.getpid()}"
    with open(fresh, "w", encoding="utf-8") as memo_file:
        json.dump({"apt_lists": lists_stamp, "package": package, "version": version}, memo_file)
    os.replace(fresh, memo)
    return package, version


def busybox_version(deadline):
    try:
        text = run_tool(["dpkg-query", "-W", "-f=${Version}", BUSYBOX_PACKAGE], deadline,
                        f"checking {BUSYBOX_PACKAGE}")
    except RigError as error:
        raise RigError(f"{BUSYBOX_PACKAGE} is not installed (apt-get install {BUSYBOX_PACKAGE}): "
                       "the outer machine's init runs on it") from error
    if not os.path.isfile(BUSYBOX_BINARY):
        raise RigError(f"{BUSYBOX_BINARY} is missing although {BUSYBOX_PACKAGE} is installed")
    return text.strip()


def recipe_hash():
    digest = hashlib.sha256()
    with open(INIT_SCRIPT, "rb") as script:
        digest.update(script.read())
    digest.update(",".join(ROOT_MODULES).encode())
    for builder in (__file__, kernel_image.__file__):
        with open(builder, "rb") as source:
            digest.update(source.read())
    return digest.hexdigest()[:12]


def entry_name(kernel_package, kernel_version, busybox):
    def clean(text):
        return re.sub(r"[^A-Za-z0-9.+-]", "_", text)

    return f"{clean(kernel_package)}_{clean(kernel_version)}-busybox_{clean(busybox)}-{recipe_hash()}"


# --- modules -----------------------------------------------------------

def module_dependencies(path):
    """The 'depends=' entry of a module's .modinfo section."""
    with open(path, "rb") as module:
        match = re.search(rb"\0depends=([^\0]*)\0", module.read())
    if not match or not match.group(1):
        return []
    return match.group(1).decode().split(",")


def load_order(module_root):
    """Module files to insmod, dependencies first."""
    files = {}
    for folder, _, names in os.walk(module_root):
        for name in names:
            if name.endswith(".ko"):
                files[name[:-3].replace("-", "_")] = os.path.join(folder, name)
    builtin = set()
    builtin_list = os.path.join(module_root, "modules.builtin")
    if os.path.exists(builtin_list):
        with open(builtin_list, encoding="utf-8") as listing:
            builtin = {os.path.basename(line.strip())[:-3].replace("-", "_") for line in listing}

    order, visiting = [], set()

    def visit(name):
        if name in order or name in builtin:
            return
        if name in visiting:
            raise RigError(f"module dependency cycle through {name}")
        if name not in files:
            raise RigError(f"the kernel package has no module {name} (needed by the outer machine)")
        visiting.add(name)
        for dependency in module_dependencies(files[name]):
            visit(dependency)
        visiting.discard(name)
        order.append(name)

    for root in ROOT_MODULES:
        visit(root)
    return [(name, files[name]) for name in order]


# --- initramfs ---------------------------------------------------------

class CpioWriter:
    """Writes a 'newc' cpio archive, the format the kernel unpacks as
    initramfs."""

    def __init__(self, out):
        self.out = out
        self.inode = 0

    def add(self, name, mode, data=b"", rdev=(0, 0)):
        self.inode += 1
        encoded = name.encode() + b"\0"
        fields = [self.inode, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0]
        header = b"070701" + b"".join(b"%08X" % field for field in fields)
        self.out.write(header + encoded)
        self.out.write(b"\0" * (-(len(header) + len(encoded)) % 4))
        self.out.write(data)
        self.out.write(b"\0" * (-len(data) % 4))


def write_initramfs(path, modules):
    def read(file_path):
        with open(file_path, "rb") as source:
            return source.read()

    directory, regular, executable, chardev = 0o040755, 0o100644, 0o100755, 0o020600
    with open(path, "wb") as out:
        cpio = CpioWriter(out)
        for folder in ["bin", "dev", "proc", "sys", "host", "modules"]:
            cpio.add(folder, directory)
        # The kernel opens /dev/console for init's stdio before init can
        # mount devtmpfs.
        cpio.add("dev/console", chardev, rdev=(5, 1))
        cpio.add("bin/busybox", executable, read(BUSYBOX_BINARY))
        cpio.add("init", executable, read(INIT_SCRIPT))
        for name, module_path in modules:
            cpio.add(f"modules/{name}.ko", regular, read(module_path))
        cpio.add("modules/order", regular, "".join(f"{name}\n" for name, _ in modules).encode())
        cpio.add("TRAILER!!!", 0)


# --- cache -------------------------------------------------------------

@contextlib.contextmanager
def exclusive_lock(path, deadline, note):
    with open(path, "a+b") as lock_file:
        waited = False
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    note(f"waiting for another run building the cache ({path})")
                    waited = True
                if deadline.expired():
                    raise TimeoutExpired("while waiting for the cache lock") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def entry_complete(folder):
    return all(os.path.isfile(os.path.join(folder, name)) for name in ("kernel", "initrd.img", "modules.txt"))


def newest_entry(cache_dir):
    """The most recently built complete entry with today's recipe, or None."""
    suffix = "-" + recipe_hash()
    candidates = [os.path.join(cache_dir, name) for name in os.listdir(cache_dir)
                  if name.startswith("linux-image-") and name.endswith(suffix)]
    candidates = [folder for folder in candidates if entry_complete(folder)]
    return max(candidates, key=os.path.getmtime) if candidates else None


def _remove_other_entries(cache_dir, keep):
    """Older kernels and recipes would pile up at about 72 MB each. A run whose
    qemu already started has loaded its kernel and initramfs."""
    for name in os.listdir(cache_dir):
        folder = os.path.join(cache_dir, name)
        if name.startswith("linux-image-") and folder != keep:
            shutil.rmtree(folder, ignore_errors=True)


def build_entry(final, kernel_package, kernel_version, cache_dir, deadline, note):
    note(f"building the outer machine's kernel and initramfs from {kernel_package} {kernel_version} "
         f"into {final}")
    work = tempfile.mkdtemp(prefix=".build-", dir=cache_dir)
    try:
        download = os.path.join(work, "download")
        os.mkdir(download)
        # apt downloads as user _apt when it can reach the folder.
        os.chmod(work, 0o755)
        os.chmod(download, 0o777)
        try:
            run_tool(["apt-get", "download", "-q", f"{kernel_package}={kernel_version}"], deadline,
                     f"downloading {kernel_package} {kernel_version}", cwd=download)
        except RigError as error:
            raise RigError(f"cannot download the outer machine's kernel ({kernel_package} "
                           f"{kernel_version}): no network access to the Debian mirror? "
                           f"Run once with network to fill the cache ({cache_dir}).\n{error}") from error
        debs = [name for name in os.listdir(download) if name.endswith(".deb")]
        if len(debs) != 1:
            raise RigError(f"apt-get download left {debs} instead of one .deb")
        tree = os.path.join(work, "tree")
        run_tool(["dpkg-deb", "-x", os.path.join(download, debs[0]), tree], deadline,
                 f"unpacking {debs[0]}")
        kernels = [name for name in os.listdir(os.path.join(tree, "boot")) if name.startswith("vmlinuz-")]
        module_roots = os.listdir(os.path.join(tree, "lib", "modules"))
        if len(kernels) != 1 or len(module_roots) != 1:
            raise RigError(f"{debs[0]} does not hold one vmlinuz and one module tree")
        entry = os.path.join(work, "entry")
        os.mkdir(entry)
        with open(os.path.join(tree, "boot", kernels[0]), "rb") as bzimage:
            kernel, kernel_form = kernel_image.fastest_kernel(bzimage.read())
        with open(os.path.join(entry, "kernel"), "wb") as kernel_file:
            kernel_file.write(kernel)
        modules = load_order(os.path.join(tree, "lib", "modules", module_roots[0]))
        write_initramfs(os.path.join(entry, "initrd.img"), modules)
        with open(os.path.join(entry, "modules.txt"), "w", encoding="utf-8") as listing:
            listing.write(f"{kernel_package} {kernel_version} ({kernel_form})\n")
            listing.write(" ".join(name for name, _ in modules) + "\n")
        os.rename(entry, final)
        _remove_other_entries(cache_dir, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def prepare(cache_dir, deadline, note):
    """Returns the cache entry folder (kernel, initrd.img), building it if
    needed. Offline with a stale entry: warns and reuses the newest one."""
    os.makedirs(cache_dir, exist_ok=True)
    busybox = busybox_version(deadline)
    try:
        kernel_package, kernel_version = remembered_kernel_package(cache_dir, deadline)
    except RigError as error:
        return _fall_back(cache_dir, error, note), False
    final = os.path.join(cache_dir, entry_name(kernel_package, kernel_version, busybox))
    if entry_complete(final):
        return final, False
    with exclusive_lock(os.path.join(cache_dir, ".lock"), deadline, note):
        if entry_complete(final):
            return final, False
        # Holding the lock, any build folder left is from a run that died.
        for name in os.listdir(cache_dir):
            if name.startswith(".build-"):
                shutil.rmtree(os.path.join(cache_dir, name), ignore_errors=True)
        try:
            build_entry(final, kernel_package, kernel_version, cache_dir, deadline, note)
        except RigError as error:
            return _fall_back(cache_dir, error, note), False
    return final, True


def _fall_back(cache_dir, error, note):
    """Offline (or apt broken) with an older complete entry: use it."""
    fallback = newest_entry(cache_dir)
    if fallback is None:
        raise error
    note(f"warning: {error}\nreusing the older cached kernel in {fallback}")
    return fallback
