#!/usr/bin/env bash
# New-user entry point: installs what is missing from Debian's packages,
# builds kvmini into build/normal, builds the default guest (Debian cloud
# kernel + busybox initramfs) and boots it, showing the guest's console.
# On a host without hardware virtualization the boot runs inside the test
# rig's nested AMD-V machine (tests/rig/run-with-kvm), which is slow but real.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
cd "$KVMINI_ROOT"

kvmini_install_packages
mkdir -p build
kvmini_build build/normal -DCMAKE_BUILD_TYPE=RelWithDebInfo -- kvmini kvmini-ctl

kvmini_say "building the default guest image (Debian cloud kernel) into build/guest/cloud"
guest-images/build.sh --flavour cloud build/guest/cloud

console=build/quickstart-console.log
rm -f "$console"
kvmini_say "booting it: 2 vCPUs, 256 MiB; the guest runs 'uname -a', then powers off"
set +e
tests/rig/run-with-kvm -- build/normal/vmm/kvmini \
  --kernel build/guest/cloud/vmlinuz --initrd build/guest/cloud/initrd-base.img \
  --cpus 2 --memory 256M --serial "file:$console" \
  --append '-- uname -a'
status=$?
set -e
kvmini_say "guest console ($console)"
cat "$console" 2>/dev/null || true
if [ "$status" -ne 0 ]; then
  echo "kvmini exited with status $status" >&2
  exit "$status"
fi
# The whole point of the boot: the command's output must reach the console.
if ! grep -qE '^Linux [^ ]+ [0-9]+\.[0-9]+.* x86_64' "$console" 2>/dev/null; then
  echo "quickstart: FAILED: the guest's 'uname -a' output is missing from its console ($console)" >&2
  exit 1
fi
if ! grep -q 'kvmini-guest: exit status 0' "$console"; then
  echo "quickstart: FAILED: no 'kvmini-guest: exit status 0' line on the guest's console ($console)" >&2
  exit 1
fi
kvmini_say "kvmini exited 0 after the guest powered off. Try: build/normal/vmm/kvmini --help"
