#!/bin/sh
# .ci/deps.sh: installs what building and testing need, from Debian 12's
# packages. Does nothing when everything is there; needs root otherwise.
set -e
PKGS="make gcc clang pkg-config python3 curl ca-certificates
lua5.4 liblua5.4-dev libcurl4-openssl-dev libpcre2-dev libxxhash-dev
libsnappy-dev zlib1g-dev lua-busted lua-yaml lua-cjson lua-filesystem luarocks valgrind
luajit2 libluajit2-5.1-dev
prometheus prometheus-node-exporter victoria-metrics nginx libnginx-mod-http-lua
openssl tmux procps chromium lua-socket"
missing=
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages:$missing" >&2
    echo "run as root, or: sudo apt-get install$missing" >&2
    exit 1
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Debian's prometheus packages start their services on install; we start
# our own on 127.0.0.1 instead, so keep the package scripts from doing it.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y -qq --no-install-recommends $missing
