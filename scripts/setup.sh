# Shared set-up for scripts/quickstart.sh and scripts/test.sh (sourced, not
# run): installs the Debian packages that are missing, then configures and
# builds. Functions only; nothing runs on source.

KVMINI_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KVMINI_JOBS=${KVMINI_JOBS:-$(nproc)}

# Everything the build, the tests, the guest image and the rig need.
KVMINI_PACKAGES=(
  build-essential cmake ninja-build clang libclang-rt-14-dev pkg-config
  linux-libc-dev liburing-dev libabsl-dev libgtest-dev libgmock-dev
  libbenchmark-dev nlohmann-json3-dev libseccomp-dev
  acpica-tools fio busybox-static sg3-utils cpio gzip kmod
  qemu-system-x86 gnuplot-nox python3
)

kvmini_say() { printf '\n==> %s\n' "$*" >&2; }

kvmini_install_packages() {
  local missing=() package
  for package in "${KVMINI_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$package")
    fi
  done
  if [ ${#missing[@]} -eq 0 ]; then
    return 0
  fi
  local command="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "kvmini needs these Debian packages, which are not installed: ${missing[*]}" >&2
    echo "Install them as root, then run this script again:" >&2
    echo "  sudo sh -c '$command'" >&2
    exit 1
  fi
  kvmini_say "installing missing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { echo "apt-get install failed for: ${missing[*]}" >&2; exit 1; }
}

# kvmini_build DIR [cmake options...] [-- ninja targets...]
kvmini_build() {
  local dir=$1; shift
  local options=() targets=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do options+=("$1"); shift; done
  [ "${1:-}" = "--" ] && shift
  targets=("$@")
  kvmini_say "configuring and building $dir ${targets[*]}"
  cmake -S "$KVMINI_ROOT" -B "$KVMINI_ROOT/$dir" -G Ninja "${options[@]}" >"$KVMINI_ROOT/$dir.configure.log" 2>&1 \
    || { cat "$KVMINI_ROOT/$dir.configure.log" >&2; echo "cmake configure of $dir failed" >&2; return 1; }
  ninja -C "$KVMINI_ROOT/$dir" -j "$KVMINI_JOBS" "${targets[@]}"
}
