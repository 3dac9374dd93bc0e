#!/usr/bin/env bash
# Makes local stand-ins for debian:bookworm and debian:bookworm-slim in
# buildah's image store with debootstrap, for machines that reach Debian's
# package mirror but no container registry. Does nothing when both exist.
#
#   deploy/docker/make-base-images.sh     (root; STORAGE_DRIVER=vfs as for buildah)
#
# The stand-ins are tagged with the names the Dockerfile uses, so it builds
# unchanged where the real images can be pulled.
set -euo pipefail

MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
FULL=docker.io/library/debian:bookworm
SLIM=docker.io/library/debian:bookworm-slim

have() { buildah inspect --type image "$1" >/dev/null 2>&1; }
if have "$FULL" && have "$SLIM"; then
  echo "make-base-images: $FULL and $SLIM present"
  exit 0
fi

work="$(mktemp -d /var/tmp/bonsai-base.XXXXXX)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"

echo "make-base-images: debootstrap $SUITE (minbase) from $MIRROR"
debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$rootfs" "$MIRROR" \
  > "$work/debootstrap.log" 2>&1 || { tail -30 "$work/debootstrap.log"; exit 1; }

# What Debian's official images add to a minbase: apt sources with security
# updates, no package caches, and (slim) no documentation or locales.
cat > "$rootfs/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb ${MIRROR%/debian}/debian-security $SUITE-security main
SOURCES
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log

import() {  # rootfs-dir image-name
  tar -C "$1" --numeric-owner -cf "$work/rootfs.tar" .
  ctr="$(buildah from scratch)"
  buildah add --quiet "$ctr" "$work/rootfs.tar" / >/dev/null
  buildah config --cmd bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
  buildah commit --quiet --rm "$ctr" "$2" >/dev/null
  echo "make-base-images: made $2 ($(du -sh "$work/rootfs.tar" | cut -f1) uncompressed)"
}
import "$rootfs" "$FULL"

cat > "$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'SLIMCFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
SLIMCFG
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
import "$rootfs" "$SLIM"
