#!/usr/bin/env bash
# New-user entry point: installs what is missing from Debian's packages,
# builds kvmini into build/normal, then runs the main job.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
cd "$KVMINI_ROOT"

kvmini_install_packages
mkdir -p build
kvmini_build build/normal -DCMAKE_BUILD_TYPE=RelWithDebInfo

# Until booting a guest lands, the main job shows the event loop at work:
# the oneshot bottom-half round trip next to the eventfd floor.
kvmini_say "event loop demo: round trips between the main loop and an IOThread"
build/normal/bench/util/util_bench --benchmark_min_time=0.2
