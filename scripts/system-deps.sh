#!/usr/bin/env bash
# Installs the system programs some tests drive for real: Debian's chromium
# (headless browser tests) and dovecot (a real IMAP server on loopback).
# Without root or apt these tests are skipped, and say so.
set -u
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -x /usr/sbin/dovecot ] || need+=(dovecot-imapd)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: ${need[*]} missing and cannot be installed here; their tests will skip" >&2
  exit 0
fi
echo "installing ${need[*]} for the browser and IMAP tests" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
