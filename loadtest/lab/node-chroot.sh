#!/usr/bin/env bash
# Runs a command as root of a lab node's chroot, the stand-in for a fresh
# instance's disk: the host's /usr bound read-only (so the distribution's
# haproxy, bash and coreutils are there, as on an image), and the node's own
# writable /etc (a copy of the host's at first use), /var, /run and /tmp,
# and /usr/local (kept in ROOT-usr-local), which persist between runs. /srv/vipfleet is SRV_DIR, read-only:
# the bootstrap, the unit and the agent artifact.
#
# Run it under `ip netns exec NODE_NS`: that gives it a mount namespace of
# its own (slave to the host's), so none of these mounts reach the host, and
# they go away when the last process in it exits, the agent the bootstrap
# started. Every run makes the mounts afresh over the same directories.
#
# usage: node-chroot.sh ROOT SRV_DIR [NAME=VALUE...] COMMAND [ARG...]
#   The command runs with a clean environment: a standard PATH and the
#   NAME=VALUE pairs.
set -Eeuo pipefail

if (($# < 3)); then
  echo "usage: $0 ROOT SRV_DIR [NAME=VALUE...] COMMAND [ARG...]" >&2
  exit 64
fi
root="$(realpath -m "$1")"
srv="$(realpath -e "$2")"
shift 2
[[ "$root" != / ]] || {
  echo "node-chroot: refusing / as the chroot" >&2
  exit 64
}

local_dir="$root-usr-local"
mkdir -p "$local_dir" "$root"/{usr,proc,sys,dev,srv/vipfleet,var/lib/haproxy,var/log,var/tmp,run,tmp}
chmod 1777 "$root/tmp" "$root/var/tmp"
if [[ ! -e "$root/etc/passwd" ]]; then
  mkdir -p "$root/etc"
  cp -a /etc/. "$root/etc/"
fi
# Merged-/usr hosts have /bin, /lib... as symlinks into /usr; older ones as directories.
for top in bin sbin lib lib32 lib64 libx32; do
  if [[ -L "/$top" && ! -L "$root/$top" ]]; then
    ln -s "$(readlink "/$top")" "$root/$top"
  elif [[ -d "/$top" && ! -L "/$top" ]]; then
    mkdir -p "$root/$top"
    mount --bind "/$top" "$root/$top"
    mount -o remount,bind,ro "$root/$top"
  fi
done
mount --bind /usr "$root/usr"
mount -o remount,bind,ro "$root/usr"
mount --bind "$local_dir" "$root/usr/local"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
mount --bind "$srv" "$root/srv/vipfleet"
mount -o remount,bind,ro "$root/srv/vipfleet"

exec chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
