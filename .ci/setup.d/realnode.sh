#!/usr/bin/env bash
# What the real-node tests need (tests/controlplane/node.py, tools/images.py): podman to
# build the images from the Dockerfiles, mmdebstrap for their Debian base, containerd +
# runc + the CNI plugins for the node, iptables for kube-proxy, gcc for the pause binary,
# docker-registry for the loopback registry the images travel through.
# Then the images themselves are built (or found up to date by content hash), so the time
# they take shows here rather than inside the first real-node test.
set -euo pipefail
cd "$(dirname "$0")/../.."

packages=(podman mmdebstrap containerd runc containernetworking-plugins iptables conntrack gcc libc6-dev docker-registry)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "realnode: need root to install ${missing[*]}" >&2
    exit 1
  fi
  echo "realnode: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo "realnode: $(containerd --version | cut -d' ' -f3), runc $(runc --version | head -1 | cut -d' ' -f3), podman $(podman --version | cut -d' ' -f3)"

start=$(date +%s)
python3 tools/images.py build all
echo "realnode: images built or reused in $(( $(date +%s) - start ))s"
