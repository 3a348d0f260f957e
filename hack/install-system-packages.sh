#!/usr/bin/env bash
# Debian packages the fleet needs: nginx and busybox (the files the local images are
# built from), QEMU (the microvm runtime), iproute2 and curl; the image tools: docker-registry (the local registry), umoci and
# skopeo (build, push and pull OCI images), runc (the OCI runtime). Package scripts must not
# start nginx as a service (port 80 on the host): policy-rc.d says no while we install.
set -euo pipefail
need=()
for pair in nginx:/usr/sbin/nginx busybox-static:/usr/bin/busybox \
            qemu-system-x86:/usr/bin/qemu-system-x86_64 iproute2:/usr/sbin/ip curl:/usr/bin/curl \
            docker-registry:/usr/bin/docker-registry skopeo:/usr/bin/skopeo \
            umoci:/usr/bin/umoci runc:/usr/sbin/runc iptables:/usr/sbin/iptables-restore; do
  [ -x "${pair#*:}" ] || need+=("${pair%%:*}")
done
# The microvm runtime puts busybox into an initramfs, so it must be the static build.
if [ -x /usr/bin/busybox ] && ! file -L /usr/bin/busybox 2>/dev/null | grep -q 'statically linked'; then
  need+=(busybox-static)
fi
[ ${#need[@]} -eq 0 ] && { echo "system packages: all present"; exit 0; }
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
policy=/usr/sbin/policy-rc.d
created=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null; $sudo chmod +x "$policy"; created=1
fi
trap '[ -n "$created" ] && $sudo rm -f "$policy"' EXIT
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
