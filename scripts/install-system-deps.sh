#!/usr/bin/env bash
# The one place that installs the system packages the tests need (CI and `npm test` both call it).
# Each entry: a binary (or file) to look for, and the Debian package that provides it.
# Installs only what is missing; as root it runs apt-get, otherwise it prints the command to run.
set -uo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
export DEBIAN_FRONTEND=noninteractive

checks=(
  "dovecot:dovecot-imapd"
  "doveadm:dovecot-imapd"
  "/usr/lib/dovecot/pop3:dovecot-pop3d"
  "clamd:clamav-daemon"
  "clamscan:clamav"
  "openssl:openssl"
  # signed and compressed OpenPGP messages made by gpg (test/mime/sealed.test.ts)
  "gpg:gpg"
  "curl:curl"
  "python3:python3"
  "unzip:unzip"
  "bsdtar:libarchive-tools"
  "7zz:7zip"
  # archives made by real tools for the hidden-archive tests (test/mime/hidden-archive.test.ts)
  "zstd:zstd"
  "cpio:cpio"
  "mkfs.ext2:e2fsprogs"
  "makensis:nsis"
  "mkfs.vfat:dosfstools"
  "mkntfs:ntfs-3g"
  "mksquashfs:squashfs-tools"
  "qemu-img:qemu-utils"
  "/usr/lib/dovecot/lmtp:dovecot-lmtpd"
  "postfix:postfix"
  "fetchmail:fetchmail"
  # real mail clients run through postern (test/integration/real-clients.test.ts)
  "mbsync:isync"
  "getmail:getmail6"
  "mpop:mpop"
  "haproxy:haproxy"
  "chromium:chromium"
  "rspamd:rspamd"
  # the edge state in Redis (test/harness/redis.ts starts its own redis-server on a free loopback port
  # with a private config; a system instance the package may start on 6379 is never used by a test)
  "redis-server:redis-server"
)

need=()
for c in "${checks[@]}"; do
  what=${c%%:*}
  pkg=${c#*:}
  if [[ $what == /* ]]; then [ -e "$what" ] && continue; else command -v "$what" >/dev/null 2>&1 && continue; fi
  [[ " ${need[*]-} " == *" $pkg "* ]] || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "The tests need: ${need[*]}. Run: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${need[*]}" >&2
  exit 1
fi
echo "Installing ${need[*]}"
apt-get update -q && apt-get install -y -q --no-install-recommends "${need[@]}"
