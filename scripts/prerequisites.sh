#!/usr/bin/env bash
# Installs what building Switchyard needs beyond Rust when it is missing: cmake (Pingora's
# zlib-ng build) and a C compiler; and what its tests need: curl, and Pebble (the `pebble`
# package: pebble and pebble-challtestsrv, a test ACME server). Uses apt-get (as root, or through
# sudo).
set -euo pipefail
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v cc >/dev/null || missing+=(gcc)
command -v curl >/dev/null || missing+=(curl)
command -v pebble >/dev/null || missing+=(pebble)
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "prerequisites: please install: ${missing[*]}" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "prerequisites: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
