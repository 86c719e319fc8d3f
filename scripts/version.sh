#!/bin/sh
# Prints nbdroot's version for the build (-ldflags -X …/version.Version) and, with --deb,
# the same as a Debian version for `make deb`.
#
#   scripts/version.sh [--deb]
#
# `git describe --tags --dirty` (v1.2.0, v1.2.0-5-gabc1234-dirty); without a tag, the same
# form counted from the first commit: 0.0.0-199-gd8e24f8. Outside a git checkout (a source
# tarball) VERSION, if set, else "unknown". Debian versions may not hold '-' without a
# revision: 0.0.0-199-gd8e24f8-dirty becomes 0.0.0+199.gd8e24f8.dirty, which sorts after
# 0.0.0 and before 0.0.1, as the commits do.
set -eu
cd "$(dirname "$0")/.."
v=${VERSION:-}
if [ -z "$v" ] && git rev-parse --git-dir >/dev/null 2>&1; then
	if ! v=$(git describe --tags --dirty --match 'v[0-9]*' 2>/dev/null); then
		n=$(git rev-list --count HEAD)
		h=$(git rev-parse --short=7 HEAD)
		v="0.0.0-$n-g$h"
		if ! git diff --quiet HEAD -- 2>/dev/null; then v="$v-dirty"; fi
	fi
fi
v=${v:-unknown}
v=${v#v}
if [ "${1:-}" = --deb ]; then
	case $v in
	[0-9]*) ;;
	*) v="0~$v" ;;
	esac
	# The first '-' starts the commit count; the rest are separators.
	v=$(printf '%s' "$v" | sed -e 's/-/+/' -e 's/-/./g')
fi
printf '%s\n' "$v"
