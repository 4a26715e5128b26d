#!/usr/bin/env bash
# Fetch the Debian tools the tests run into .tools/ (git-ignored), without root: `apt-get download`
# each package and the libraries it needs that this machine lacks, then `dpkg -x` them into
# .tools/root. The tests look for a tool in its *_BIN variable, then on PATH, then here
# (tests/helpers/tools.ts), so nothing needs installing system-wide.
#
#   scripts/get-tools.sh [package ...]     default: prometheus redis-server
#
# prometheus brings `prometheus` and `promtool`; redis-server brings `redis-server` and `redis-cli`
# (their binaries are in redis-tools, fetched with it). Uses the machine's apt package lists when they are there, else
# downloads its own into .tools/apt (no root needed for either).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=("$@")
[ "${#packages[@]}" -gt 0 ] || packages=(prometheus redis-server)

root="$PWD/.tools/root"
work="$PWD/.tools/apt"
mkdir -p "$root" "$work/debs"
apt_opts=()

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# Library packages (lib*) a package depends on, directly.
library_deps() {
  apt-cache "${apt_opts[@]}" depends --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances "$1" | awk '/^  (Pre)?Depends: lib/ { print $2 }'
}

# apt-get download needs package lists; a fresh machine (or container) may have none.
if ! apt-cache policy "${packages[0]}" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  echo "get-tools: no usable apt package lists on this machine; fetching them into .tools/apt"
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
  apt_opts=(-o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o Debug::NoLocking=1)
  apt-get "${apt_opts[@]}" -q update
fi

want=()
for pkg in "${packages[@]}"; do
  want+=("$pkg")
  # redis-server's binary lives in redis-tools.
  [ "$pkg" = redis-server ] && want+=(redis-tools)
done
for pkg in "${want[@]}"; do
  for dep in $(library_deps "$pkg"); do installed "$dep" || want+=("$dep"); done
done

cd "$work/debs"
rm -f ./*.deb
apt-get "${apt_opts[@]}" -q download "${want[@]}"
for deb in ./*.deb; do
  dpkg -x "$deb" "$root"
done
rm -f ./*.deb

echo "get-tools: extracted ${want[*]} into .tools/root"
for bin in prometheus promtool redis-server redis-cli; do
  [ -e "$root/usr/bin/$bin" ] && echo "  $root/usr/bin/$bin"
done
exit 0
