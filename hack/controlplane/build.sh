#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager and kube-scheduler from the Go
# module proxy into a per-machine cache keyed by version, so they are built once.
# Usage: build.sh [OUT_DIR]   (default: $VK_FARGATE_CACHE/controlplane/<k8s version>)
# Prints the output directory on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
k8s_version=$(awk '$1=="k8s.io/kubernetes" {print $2; exit}' "$here/go.mod")
etcd_version=$(awk '$1=="go.etcd.io/etcd/server/v3" {print $2; exit}' "$here/go.mod")
cache=${VK_FARGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vk-fargate}
out=${1:-$cache/controlplane/$k8s_version}
mkdir -p "$out"

minor=${k8s_version#v1.}; minor=${minor%%.*}
k8s_ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=$k8s_version \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=$minor \
 -X k8s.io/component-base/version.gitTreeState=clean"

build() {  # build NAME PACKAGE LDFLAGS
  if [ -x "$out/$1" ]; then echo "cached: $out/$1" >&2; return; fi
  echo "building $1 from $2" >&2
  (cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags "$3" -o "$out/$1.tmp" "$2")
  mv "$out/$1.tmp" "$out/$1"
}
build etcd go.etcd.io/etcd/server/v3 "-s -w"
for c in kube-apiserver kube-controller-manager kube-scheduler; do
  build "$c" "k8s.io/kubernetes/cmd/$c" "$k8s_ldflags"
done
echo "k8s=$k8s_version etcd=$etcd_version" > "$out/VERSIONS"
echo "$out"
