# Debian package handling for guest-images/build.sh (sourced, not run):
# resolving names and candidate versions with apt-cache, downloading .deb
# files into a cache with apt-get download, unpacking them with dpkg-deb -x,
# and the build stamp that lets a rebuild with unchanged inputs be skipped.
# shellcheck shell=bash disable=SC2154 # $work and $image are build.sh's

die() {
	echo "build.sh: error: $*" >&2
	exit 1
}

usage_error() {
	echo "build.sh: $*" >&2
	echo "run '$0 --help' for usage" >&2
	exit 2
}

require_host_tools() {
	local tool missing=()
	for tool in "$@"; do
		command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
	done
	[ ${#missing[@]} -eq 0 ] || die "missing host tools: ${missing[*]} (install them with apt-get)"
}

# Packages fetched for this build: name -> version. The stamp records them.
declare -gA FETCHED_VERSION=()
# Unpacked package trees: name -> directory.
declare -gA PACKAGE_ROOT=()

init_deb_cache() {
	DEB_CACHE=${KVMINI_DEB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kvmini/debs}
	mkdir -p "$DEB_CACHE" || die "cannot create the .deb cache directory '$DEB_CACHE'"
}

# Prints the candidate version of each named package as "name version" lines,
# with "(none)" for a package apt does not know.
candidate_versions() {
	LC_ALL=C apt-cache policy "$@" 2>/dev/null | awk '
		/^[^ ].*:$/ { name = substr($0, 1, length($0) - 1) }
		/^  Candidate:/ { print name, $2 }'
}

apt_lists_hint="apt has no package lists for it: run 'apt-get update' (needs access to a Debian mirror)"

# Prints the linux-image-<release> package that a kernel metapackage depends on.
kernel_package_of() {
	local metapackage=$1 kernel
	kernel=$(LC_ALL=C apt-cache depends "$metapackage" 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
	[ -n "$kernel" ] || die "cannot resolve the kernel package of $metapackage: $apt_lists_hint"
	echo "$kernel"
}

# The .deb file for name + version in the cache ("" if not there).
cached_deb() {
	local name=$1 version=$2 file
	for file in "$DEB_CACHE/${name}_${version//:/%3a}_"*.deb; do
		[ -f "$file" ] && echo "$file" && return 0
	done
	return 0
}

# Downloads (unless cached) and unpacks the named packages (all known to
# load_package_index) into $work/packages/<name>, recording their versions.
fetch_packages() {
	local name version missing=() apt_options=()
	# Builds of other OUTDIRs share the cache: one at a time looks into it and
	# fills it, so nobody unpacks a .deb that is still being written.
	exec 8>"$DEB_CACHE/.lock"
	flock 8
	for name in "$@"; do
		[ -z "${PACKAGE_ROOT[$name]:-}" ] || continue
		version=${CANDIDATE[$name]:-"(none)"}
		[ "$version" != "(none)" ] || die "Debian package '$name' is unknown: $apt_lists_hint"
		FETCHED_VERSION[$name]=$version
		[ -n "$(cached_deb "$name" "$version")" ] && continue
		# Reuse what apt itself already downloaded on this host.
		local archived
		for archived in "/var/cache/apt/archives/${name}_${version//:/%3a}_"*.deb; do
			[ -f "$archived" ] && cp "$archived" "$DEB_CACHE/" && continue 2
		done
		missing+=("$name=$version")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		echo "downloading ${#missing[@]} package(s): ${missing[*]}"
		# As root, apt would try to drop to the _apt user, who cannot write the cache.
		[ "$(id -u)" != 0 ] || apt_options=(-o APT::Sandbox::User=root)
		if ! (cd "$DEB_CACHE" && apt-get "${apt_options[@]}" -q download "${missing[@]}" >"$work/apt.log" 2>&1); then
			grep '^E:' "$work/apt.log" | sed 's/^/  apt-get: /' >&2 || sed 's/^/  apt-get: /' "$work/apt.log" >&2
			die "cannot download ${missing[*]}: no access to a Debian mirror (offline?) and not in the cache $DEB_CACHE"
		fi
	fi
	flock -u 8
	for name in "$@"; do
		[ -z "${PACKAGE_ROOT[$name]:-}" ] || continue
		local deb root=$work/packages/$name
		deb=$(cached_deb "$name" "${FETCHED_VERSION[$name]}")
		[ -n "$deb" ] || die "apt-get download did not produce the .deb of $name ${FETCHED_VERSION[$name]}"
		mkdir -p "$root"
		dpkg-deb -x "$deb" "$root" || die "cannot unpack $deb (corrupt download? delete it and rerun)"
		PACKAGE_ROOT[$name]=$root
	done
}

# Direct Depends (and Pre-Depends) of every package, from one recursive
# apt-cache query: name -> space-separated names. Each alternative group
# contributes its first real package; virtual packages are skipped.
declare -gA DEPENDS_OF=()
# apt's candidate version of every package in that closure: name -> version.
declare -gA CANDIDATE=()

# apt-cache starts slowly (about a second), so ask it once about the whole
# dependency closure of the given packages instead of once per package.
load_package_index() {
	local name rest version
	while read -r name rest; do
		DEPENDS_OF[$name]=$rest
	done < <(LC_ALL=C apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
		--no-breaks --no-replaces --no-enhances "$@" 2>/dev/null | awk '
		function flush() { if (package != "") print package, deps }
		/^[^ ]/ { flush(); package = ($0 ~ /^</) ? "" : $0; deps = ""; chosen = 0; next }
		/^ *\|?(Pre)?Depends:/ {
			name = $2
			if (!chosen && name !~ /^</) { deps = deps " " name; chosen = 1 }
			# "|Depends:" means "or the next line": a group ends at a line without "|".
			if ($1 !~ /^\|/) chosen = 0
		}
		END { flush() }')
	[ ${#DEPENDS_OF[@]} -gt 0 ] || die "apt knows none of: $*; $apt_lists_hint"
	while read -r name version; do
		CANDIDATE[$name]=$version
	done < <(candidate_versions "${!DEPENDS_OF[@]}")
}

direct_depends() {
	local name
	for name in ${DEPENDS_OF[$1]:-}; do echo "$name"; done
}

# The stamp: the recipe hash, then one "name version" line per package used.
write_stamp() {
	local stamp_file=$1 recipe_hash=$2 name
	{
		echo "recipe $recipe_hash"
		for name in "${!FETCHED_VERSION[@]}"; do echo "$name ${FETCHED_VERSION[$name]}"; done | LC_ALL=C sort
	} >"$stamp_file.tmp"
	mv -f "$stamp_file.tmp" "$stamp_file"
}

# True when the stamp matches the recipe hash and apt's current candidate
# version of every package the image was built from.
image_is_current() {
	local stamp_file=$1 recipe_hash=$2 outdir=$3 recorded current
	local file
	for file in "$stamp_file" "$outdir/vmlinuz" "$outdir/initrd.img" "$outdir/initrd-base.img"; do
		[ -f "$file" ] || return 1
	done
	[ "$(head -n 1 "$stamp_file")" = "recipe $recipe_hash" ] || return 1
	recorded=$(tail -n +2 "$stamp_file")
	[ -n "$recorded" ] || return 1
	# shellcheck disable=SC2046 # one package name per word
	current=$(candidate_versions $(cut -d' ' -f1 <<<"$recorded") | LC_ALL=C sort)
	[ "$current" = "$recorded" ]
}
