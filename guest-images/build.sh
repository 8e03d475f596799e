#!/bin/bash
# Builds the default kvmini guest image (OUTDIR/vmlinuz + OUTDIR/initrd.img)
# from Debian packages only: apt-get download + dpkg-deb -x, nothing is
# installed on the host. See guest-images/README.md for what the image holds.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR
source "$SCRIPT_DIR/lib/debs.sh"
source "$SCRIPT_DIR/lib/image.sh"

# The storage modules every image loads; their dependencies come from modules.dep.
BASE_MODULES=(virtio_ring virtio virtio_mmio virtio_blk scsi_common scsi_mod sd_mod virtio_scsi)
# Userland packages; their shared libraries are resolved from their Depends.
USER_PACKAGES=(busybox-static dash fio sg3-utils util-linux)

usage() {
	cat <<EOF
usage: $0 [--flavour cloud|generic] [--extra-modules M1,M2,...] [--compression gzip|none] OUTDIR

Builds OUTDIR/vmlinuz and OUTDIR/initrd.img (gzip cpio) from Debian packages:
the kernel the linux-image-<flavour> metapackage depends on, busybox-static,
the virtio/virtio-mmio/virtio-blk/scsi/sd/virtio-scsi modules, dash, fio,
sg3-utils, blkdiscard and guest-exit. OUTDIR/initrd-base.img is the same
without fio (whose libraries are 80 MB): for boots that need no fio. Skips
the work when OUTDIR already holds an image of the same package versions and
scripts.

  --flavour cloud|generic   linux-image-cloud-amd64 (default) or linux-image-amd64
  --extra-modules LIST      more kernel modules to load at boot (e.g. virtio_pci)
  --compression gzip|none   initrd.img as gzip cpio (default) or plain cpio: the
                            kernel unpacks a plain one about twice as fast
                            under emulation, at 2.6 times the size

Environment: KVMINI_DEB_CACHE (where .deb files are kept, default
\${XDG_CACHE_HOME:-\$HOME/.cache}/kvmini/debs), CC (default gcc).
EOF
}

flavour=cloud
extra_modules=""
compression=gzip
outdir=""
while [ $# -gt 0 ]; do
	case "$1" in
	--flavour) [ $# -ge 2 ] || usage_error "--flavour needs a value"; flavour=$2; shift 2 ;;
	--flavour=*) flavour=${1#*=}; shift ;;
	--extra-modules) [ $# -ge 2 ] || usage_error "--extra-modules needs a value"; extra_modules=$2; shift 2 ;;
	--extra-modules=*) extra_modules=${1#*=}; shift ;;
	--compression) [ $# -ge 2 ] || usage_error "--compression needs a value"; compression=$2; shift 2 ;;
	--compression=*) compression=${1#*=}; shift ;;
	-h | --help) usage; exit 0 ;;
	-*) usage_error "unknown option '$1'" ;;
	*) [ -z "$outdir" ] || usage_error "more than one OUTDIR given ('$outdir', '$1')"; outdir=$1; shift ;;
	esac
done
[ -n "$outdir" ] || usage_error "OUTDIR is missing"
case "$flavour" in
cloud) metapackage=linux-image-cloud-amd64 ;;
generic) metapackage=linux-image-amd64 ;;
*) usage_error "unknown flavour '$flavour' (want cloud or generic)" ;;
esac
case "$compression" in
gzip | none) ;;
*) usage_error "unknown compression '$compression' (want gzip or none)" ;;
esac
IFS=', ' read -r -a extra_module_list <<<"$extra_modules"

require_host_tools apt-get apt-cache dpkg-deb readelf gzip sha256sum flock realpath "${CC:-gcc}"

mkdir -p "$outdir" || die "cannot create output directory '$outdir'"
outdir=$(cd "$outdir" && pwd)
exec 9>"$outdir/.build.lock"
flock 9 # parallel builds of one OUTDIR (e.g. concurrent tests) take turns

kernel_package=$(kernel_package_of "$metapackage")
kernel_release=${kernel_package#linux-image-}

# Everything that shapes the image besides the versions of the packages used.
recipe_hash=$(
	{
		echo "kernel=$kernel_package extra_modules=${extra_module_list[*]} compression=$compression"
		"${CC:-gcc}" --version | head -n 1
		cat "$SCRIPT_DIR/build.sh" "$SCRIPT_DIR/lib/debs.sh" "$SCRIPT_DIR/lib/image.sh" \
			"$SCRIPT_DIR/init" "$SCRIPT_DIR/src/guest-exit.c"
	} | sha256sum | cut -d' ' -f1
)
stamp_file=$outdir/.build-stamp
if image_is_current "$stamp_file" "$recipe_hash" "$outdir"; then
	echo "guest image in $outdir is up to date ($(cat "$outdir/kernel-release"))"
	exit 0
fi

start_seconds=$(date +%s.%N)
init_deb_cache
work=$(mktemp -d "$outdir/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
image=$work/root
mkdir -p "$image"

echo "kernel: $kernel_package (from $metapackage)"
load_package_index "$kernel_package" kmod libkmod2 "${USER_PACKAGES[@]}"
fetch_packages "$kernel_package" kmod libkmod2 "${USER_PACKAGES[@]}"

install_kernel "$kernel_package" "$kernel_release" "$work/vmlinuz" \
	"${BASE_MODULES[@]}" "${extra_module_list[@]}"
install_userland
install_init "$SCRIPT_DIR/init"
build_guest_exit "$SCRIPT_DIR/src/guest-exit.c"
pack_initramfs "$work/initrd-base.img" "$compression"
base_unpacked=$(du -sb "$image" | cut -f1)
install_fio
pack_initramfs "$work/initrd.img" "$compression"

mv -f "$work/vmlinuz" "$outdir/vmlinuz"
mv -f "$work/initrd-base.img" "$outdir/initrd-base.img"
mv -f "$work/initrd.img" "$outdir/initrd.img"
echo "$kernel_release" >"$outdir/kernel-release"
write_manifest "$outdir/manifest.txt" "$kernel_release"
write_stamp "$stamp_file" "$recipe_hash"

elapsed=$(awk -v start="$start_seconds" -v end="$(date +%s.%N)" 'BEGIN { printf "%.1f", end - start }')
printf 'built %s in %s s: vmlinuz %s bytes, initrd.img %s bytes (%s unpacked), initrd-base.img %s bytes (%s unpacked)\n' \
	"$outdir" "$elapsed" "$(stat -c %s "$outdir/vmlinuz")" "$(stat -c %s "$outdir/initrd.img")" \
	"$(du -sb "$image" | cut -f1)" "$(stat -c %s "$outdir/initrd-base.img")" "$base_unpacked"
