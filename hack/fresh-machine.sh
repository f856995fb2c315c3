#!/usr/bin/env bash
# A newcomer's machine: a minimal Debian bookworm that holds only what the README asks for (python3,
# python3-venv, make, git, ca-certificates), where a clean clone of this repository's committed HEAD runs
# COMMAND (default: make test). Nothing of this host goes in but its way to the package registries: the CA
# bundle, pip's settings and the resolver. So a test that leans on a tool this host happens to have fails here.
#
#   hack/fresh-machine.sh [COMMAND...]       as root in the rootfs
#   FRESH_USER=NAME hack/fresh-machine.sh …  as a new non-root user NAME, who owns the clone
#
# The rootfs is made once with debootstrap and cached (FRESH_MACHINE_DIR); every run works on a copy, so runs
# share nothing. Needs root on the host (debootstrap, chroot, mounts). Uncommitted changes are not in the clone.
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HACK_DIR")
CACHE=${FRESH_MACHINE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/consul-microservices/fresh-machine}
SUITE=bookworm
PACKAGES=python3,python3-venv,make,git,ca-certificates # the README's stated needs, nothing more
ROOTFS=$CACHE/$SUITE-${PACKAGES//,/-}
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
LOG_TAG=fresh-machine
# shellcheck source=lib.sh
source "$HACK_DIR/lib.sh"

[[ $(id -u) == 0 ]] || die "needs root (debootstrap, chroot, mounts)"
[[ $# -gt 0 ]] || set -- make test

# The host's own Debian mirror (deb822 or one-line sources), else Debian's.
debian_mirror() {
	local found
	found=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1)
	[[ -n $found ]] || found=$(awk '$1 == "deb" && $3 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
	echo "${found:-http://deb.debian.org/debian}"
}

if [[ ! -x $ROOTFS/usr/bin/python3 ]]; then
	install_packages debootstrap
	mkdir -p "$CACHE"
	rm -rf "$ROOTFS.tmp"
	log "debootstrap $SUITE ($PACKAGES) once into $ROOTFS (log: $CACHE/debootstrap.log)"
	debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS.tmp" "$(debian_mirror)" \
		>"$CACHE/debootstrap.log" 2>&1 || { tail -5 "$CACHE/debootstrap.log" >&2; die "debootstrap failed"; }
	mv "$ROOTFS.tmp" "$ROOTFS"
fi

run=$(mktemp -d /tmp/fresh-machine.XXXXXX)
root=$run/root
cleanup() {
	local mount
	for mount in sys dev proc; do umount -R -l "$root/$mount" 2>/dev/null || true; done
	# Never delete through a mount that is still there: it would reach the host's /dev or /sys.
	if grep -q " $run/" /proc/mounts; then log "mounts remain under $run; left in place"; else rm -rf "$run"; fi
}
trap cleanup EXIT

cp -a "$ROOTFS" "$root"
[[ ! -f $CA_BUNDLE ]] || cp "$CA_BUNDLE" "$root$CA_BUNDLE"
[[ ! -f /etc/pip.conf ]] || cp /etc/pip.conf "$root/etc/pip.conf"
cp /etc/resolv.conf "$root/etc/resolv.conf"
git clone --quiet "$REPO" "$root/work/repo"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --rbind /sys "$root/sys"

home=/root
as_user=()
if [[ -n ${FRESH_USER:-} ]]; then
	chroot "$root" useradd --create-home "$FRESH_USER"
	chroot "$root" chown -R "$FRESH_USER:" /work/repo
	home=/home/$FRESH_USER
	as_user=(/usr/sbin/runuser -u "$FRESH_USER" --)
fi
log "$(git -C "$REPO" rev-parse --short HEAD) in a fresh $SUITE as ${FRESH_USER:-root}: $*"
chroot "$root" "${as_user[@]}" /usr/bin/env -i HOME="$home" LANG=C.UTF-8 \
	PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PIP_CERT="$CA_BUNDLE" \
	/bin/bash -c 'cd /work/repo && exec "$@"' fresh-machine "$@"
