# Assembling the guest image for guest-images/build.sh (sourced, not run):
# the kernel and its module subset, the userland programs with every shared
# library they need (found through the packages' Depends), /init, the
# guest-exit helper, and the gzip cpio. Works on $image (the image root) and
# the unpacked packages from lib/debs.sh.
# shellcheck shell=bash disable=SC2154 # $work and $image are build.sh's

LIB_DIRS=(lib/x86_64-linux-gnu usr/lib/x86_64-linux-gnu lib usr/lib lib64)

# Copies the kernel to $vmlinuz_out and the wanted modules (plus their
# dependencies, from depmod's modules.dep) into the image; writes their load
# order to /etc/kvmini/modules.
install_kernel() {
	local package=$1 release=$2 vmlinuz_out=$3
	shift 3
	local kroot=${PACKAGE_ROOT[$package]} module_dir modules_dep
	module_dir=$kroot/lib/modules/$release
	[ -f "$kroot/boot/vmlinuz-$release" ] || die "$package has no boot/vmlinuz-$release"
	cp "$kroot/boot/vmlinuz-$release" "$vmlinuz_out"
	run_depmod "$kroot" "$release"
	modules_dep=$module_dir/modules.dep

	declare -A path_of=() visited=()
	local line path name
	# Parameter expansion, not basename: there are thousands of modules.
	while IFS= read -r line; do
		path=${line%%:*}
		name=${path##*/} name=${name%.ko}
		path_of[${name//-/_}]=$path
	done <"$modules_dep"
	declare -A builtin=()
	while IFS= read -r path; do
		name=${path##*/} name=${name%.ko}
		builtin[${name//-/_}]=1
	done <"$module_dir/modules.builtin"

	local order=()
	# Depth-first: a module goes after everything it depends on.
	visit_module() {
		local wanted=${1//-/_} dep deps
		[ -z "${visited[$wanted]:-}" ] || return 0
		visited[$wanted]=1
		if [ -z "${path_of[$wanted]:-}" ]; then
			[ -n "${builtin[$wanted]:-}" ] && return 0
			die "kernel module '$1' is neither a module nor built into $release"
		fi
		deps=$(grep -m 1 "^${path_of[$wanted]}:" "$modules_dep" | cut -d: -f2)
		for dep in $deps; do
			dep=${dep##*/}
			visit_module "${dep%.ko}"
		done
		order+=("${path_of[$wanted]}")
	}
	local module
	for module in "$@"; do visit_module "$module"; done

	mkdir -p "$image/etc/kvmini"
	: >"$image/etc/kvmini/modules"
	for path in "${order[@]}"; do
		mkdir -p "$image/lib/modules/$release/$(dirname "$path")"
		cp "$module_dir/$path" "$image/lib/modules/$release/$path"
		echo "$path" >>"$image/etc/kvmini/modules"
	done
	cp "$module_dir/modules.builtin" "$module_dir/modules.builtin.modinfo" "$module_dir/modules.order" \
		"$image/lib/modules/$release/"
	# modules.dep & co. for the subset, so modprobe (and the kernel's
	# request_module) work inside the guest too.
	run_depmod "$image" "$release"
	echo "modules (load order): $(tr '\n' ' ' <"$image/etc/kvmini/modules")"
}

# depmod from the unpacked kmod package, on an unpacked tree (never the host's).
run_depmod() {
	local root=$1 release=$2 kmod=${PACKAGE_ROOT[kmod]}/bin/kmod
	local libdirs="${PACKAGE_ROOT[libkmod2]}/lib/x86_64-linux-gnu:${PACKAGE_ROOT[libkmod2]}/usr/lib/x86_64-linux-gnu"
	# kmod picks its personality from argv[0].
	LD_LIBRARY_PATH=$libdirs bash -c 'exec -a depmod "$0" -b "$1" "$2"' "$kmod" "$root" "$release" ||
		die "depmod failed on $root for $release"
}

# Image path -> package it came from, for the files copied so far.
declare -gA OWNER_OF=()

# Copies $root/$rel into the image, following a chain of symlinks (each link
# is kept as a link); sets COPIED to the image path of the real file at the end
# (a variable, not output: OWNER_OF must be updated in this shell).
copy_from_package() {
	local package=$1 rel=$2 root=${PACKAGE_ROOT[$1]} target hops=0
	while [ -L "$root/$rel" ]; do
		mkdir -p "$image/$(dirname "$rel")"
		rm -f "$image/$rel" # cp would write through an existing link (to the host's /bin/busybox)
		cp -P "$root/$rel" "$image/$rel"
		target=$(readlink "$root/$rel")
		case "$target" in
		/*) rel=${target#/} ;;
		*) rel=$(realpath -m -s "/$(dirname "$rel")/$target") rel=${rel#/} ;;
		esac
		hops=$((hops + 1))
		[ $hops -lt 20 ] || die "symlink loop at $rel in $package"
	done
	[ -f "$root/$rel" ] || die "$package: /$rel is missing (a link points outside the package?)"
	mkdir -p "$image/$(dirname "$rel")"
	rm -f "$image/$rel"
	cp "$root/$rel" "$image/$rel"
	OWNER_OF[$rel]=$package
	COPIED=$rel
}

# Prints "package relpath" for the first package of the given ones that ships
# one of the candidate paths.
find_in_packages() {
	local -n wanted_paths=$1
	shift
	local package candidate
	for package in "$@"; do
		for candidate in "${wanted_paths[@]}"; do
			if [ -e "${PACKAGE_ROOT[$package]}/$candidate" ] || [ -L "${PACKAGE_ROOT[$package]}/$candidate" ]; then
				echo "$package $candidate"
				return 0
			fi
		done
	done
	return 1
}

# Prints what an ELF file needs: "interp PATH" and "needed SONAME" lines, and
# "dir DIR" for each RUNPATH/RPATH entry ($ORIGIN expanded).
elf_requirements() {
	local rel=$1 origin
	origin=$(dirname "/$rel")
	LC_ALL=C readelf -d -l -W "$image/$rel" 2>/dev/null | awk -v origin="$origin" '
		/Requesting program interpreter:/ { sub(/.*interpreter: /, ""); sub(/\]$/, ""); print "interp " $0 }
		/\(NEEDED\)/ { match($0, /\[[^]]*\]/); print "needed " substr($0, RSTART + 1, RLENGTH - 2) }
		/\((RUNPATH|RPATH)\)/ {
			match($0, /\[[^]]*\]/); n = split(substr($0, RSTART + 1, RLENGTH - 2), dirs, ":")
			for (i = 1; i <= n; i++) { gsub(/\$ORIGIN|\$\{ORIGIN\}/, origin, dirs[i]); print "dir " dirs[i] }
		}'
}

# Copies into the image the shared libraries and the loader that the ELF
# files at the given image paths need, recursively. Debian's shlibs guarantee that a package depends
# directly on the package of each library its binaries link, so each
# missing library is looked up in the owner package and its direct Depends.
resolve_libraries() {
	local queue=("$@") rel kind value requirement owner found package path
	declare -A done_files=()
	while [ ${#queue[@]} -gt 0 ]; do
		rel=${queue[0]}
		queue=("${queue[@]:1}")
		[ -z "${done_files[$rel]:-}" ] || continue
		done_files[$rel]=1
		owner=${OWNER_OF[$rel]}
		local search_dirs=() requirements=()
		mapfile -t requirements < <(elf_requirements "$rel")
		for requirement in "${requirements[@]}"; do
			[ "${requirement%% *}" = dir ] && search_dirs+=("${requirement#dir /}")
		done
		search_dirs+=("${LIB_DIRS[@]}")
		for requirement in "${requirements[@]}"; do
			kind=${requirement%% *} value=${requirement#* }
			local candidates=()
			case "$kind" in
			interp) candidates=("${value#/}") ;;
			needed) for path in "${search_dirs[@]}"; do candidates+=("$path/$value"); done ;;
			*) continue ;;
			esac
			for path in "${candidates[@]}"; do
				# -L too: -e would follow an absolute link to the host's file.
				if [ -e "$image/$path" ] || [ -L "$image/$path" ]; then continue 2; fi
			done
			if ! found=$(find_in_packages candidates "$owner"); then
				local depends=()
				mapfile -t depends < <(direct_depends "$owner")
				[ ${#depends[@]} -eq 0 ] || fetch_packages "${depends[@]}"
				found=$(find_in_packages candidates "${depends[@]}") ||
					die "cannot find $value (needed by /$rel from $owner) in $owner or its dependencies"
			fi
			package=${found%% *} path=${found#* }
			copy_from_package "$package" "$path"
			queue+=("$COPIED")
		done
	done
}

# dash as /bin/sh, sg3-utils, blkdiscard and their libraries, then busybox
# with a link per applet that no real program of the same name shadows. dash
# is /bin/sh (as on Debian) because the static busybox's own shell runs its
# applets before anything on PATH: under it `blkdiscard` would be busybox's,
# not util-linux's.
install_userland() {
	local elf_files=() rel
	copy_from_package dash bin/sh
	elf_files+=("$COPIED")
	for rel in $(cd "${PACKAGE_ROOT[sg3-utils]}" && find usr/bin usr/sbin bin sbin -type f 2>/dev/null | LC_ALL=C sort); do
		LC_ALL=C readelf -h "${PACKAGE_ROOT[sg3-utils]}/$rel" >/dev/null 2>&1 || continue # skip scripts
		copy_from_package sg3-utils "$rel"
		elf_files+=("$COPIED")
	done
	rel=$(cd "${PACKAGE_ROOT[util-linux]}" && find sbin usr/sbin bin usr/bin -name blkdiscard 2>/dev/null | head -n 1)
	[ -n "$rel" ] || die "util-linux ships no blkdiscard"
	copy_from_package util-linux "$rel"
	elf_files+=("$COPIED")
	resolve_libraries "${elf_files[@]}"

	copy_from_package busybox-static bin/busybox
	local applet dir shadowed=()
	while IFS= read -r applet; do
		for dir in bin sbin usr/bin usr/sbin; do
			if [ -e "$image/$dir/${applet##*/}" ] || [ -L "$image/$dir/${applet##*/}" ]; then
				[ "${applet##*/}" = sh ] || shadowed+=("/$dir/${applet##*/}")
				continue 2
			fi
		done
		mkdir -p "$image/$(dirname "$applet")"
		ln -s /bin/busybox "$image/$applet"
	done < <("$image/bin/busybox" --list-full)
	write_profile "${shadowed[@]}"
}

# fio and its libraries: about 80 MB unpacked, hence last and separate, so
# that the image without it can be packed first.
install_fio() {
	copy_from_package fio usr/bin/fio
	resolve_libraries "$COPIED"
}

# /etc/profile of the interactive shell (busybox ash, for its line editing):
# aliases make the real programs win over busybox's applets of the same name.
write_profile() {
	local program
	mkdir -p "$image/etc"
	{
		echo "# Login profile of the kvmini guest's interactive shell (busybox ash)."
		echo "export PS1='kvmini-guest:\w# '"
		for program in "$@"; do echo "alias ${program##*/}=$program"; done
	} >"$image/etc/profile"
}

install_init() {
	cp "$1" "$image/init"
	chmod 755 "$image/init"
	mkdir -p "$image"/{proc,sys,dev,tmp,run,root,mnt}
	# The kernel's built-in initramfs provides /dev/console already; add it
	# when we may create device nodes, for kernels built without one.
	[ "$(id -u)" != 0 ] || mknod -m 600 "$image/dev/console" c 5 1
}

build_guest_exit() {
	local source=$1
	mkdir -p "$image/sbin"
	"${CC:-gcc}" -static -Os -s -Wall -Wextra -Werror -o "$image/sbin/guest-exit" "$source" ||
		die "cannot compile $source (is the static C library, libc6-dev, installed?)"
}

# newc cpio (through the unpacked busybox) with fixed owners and times,
# gzip-compressed unless compression is "none". gzip -6: -9 takes twice as
# long for under 1 % less.
pack_initramfs() {
	local out=$1 compression=$2 compress=(gzip -6 -n)
	[ "$compression" != none ] || compress=(cat)
	find "$image" -exec touch -h -d @0 {} +
	(cd "$image" && find . -mindepth 1 | LC_ALL=C sort |
		"$image/bin/busybox" cpio -o -H newc -R 0:0 2>/dev/null) | "${compress[@]}" >"$out"
	[ -s "$out" ] || die "packing the initramfs failed"
}

write_manifest() {
	local out=$1 release=$2 name
	{
		echo "kernel-release $release"
		echo "modules $(tr '\n' ' ' <"$image/etc/kvmini/modules")"
		echo "packages:"
		for name in "${!FETCHED_VERSION[@]}"; do echo "  $name ${FETCHED_VERSION[$name]}"; done | LC_ALL=C sort
		echo "files (bytes, unpacked):"
		(cd "$image" && find . -type f -printf '  %s %P\n' | LC_ALL=C sort -k2)
	} >"$out"
}
