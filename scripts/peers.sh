#!/usr/bin/env bash
# scripts/peers.sh — build the *reference peers* that twill's tests and
# benchmarks run against. They are never part of the product.
#
#   scripts/peers.sh [NAME...]   build the named peers (default: all);
#                                NAME is one of: cni cnitool flannel-cni flanneld kube-apiserver
#   scripts/peers.sh --list      print the KEY=path lines without building
#
# Everything (binaries, sources, GOPATH, GOCACHE, GOMODCACHE) lives under
# ${TWILL_PEERS_DIR:-/var/cache/twill-peers}; nothing is written into the repo.
# A peer whose binaries exist and whose stamp records the same version+recipe is
# skipped. Progress goes to stderr; the KEY=path summary goes to stdout, so
#   eval "$(scripts/peers.sh)"   or   eval "$(scripts/peers.sh --list)"
# exports nothing but sets the TWILL_PEER_* variables in the calling shell.
set -euo pipefail

DIR="${TWILL_PEERS_DIR:-/var/cache/twill-peers}"
SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"

# ---- pinned versions (looked up with `go list -m -versions` via the proxy) ----
CNI_PLUGINS_VERSION=v1.10.0                 # github.com/containernetworking/plugins
CNITOOL_VERSION=v1.3.1                      # github.com/containernetworking/cni (newest tag)
# The flannel CNI plugin proper (github.com/flannel-io/cni-plugin) is refused by
# the module proxy reachable here (403 for every version). The same plugin lived
# in containernetworking/plugins as plugins/meta/flannel until v0.9.1, which the
# proxy serves; that is the reference used here. It speaks CNI spec 0.1.0-0.4.0
# (not 1.0.0). Override both to switch once flannel-io/cni-plugin is served.
FLANNEL_CNI_PKG="${TWILL_FLANNEL_CNI_PKG:-github.com/containernetworking/plugins/plugins/meta/flannel}"
FLANNEL_CNI_VERSION="${TWILL_FLANNEL_CNI_VERSION:-v0.9.1}"
FLANNEL_VERSION=v0.28.9                     # github.com/flannel-io/flannel
K8S_VERSION=v1.37.2                         # k8s.io/kubernetes (newest stable the proxy lists)

ALL_PEERS=(cni cnitool flannel-cni flanneld kube-apiserver)
KNOWN_PEERS=("${ALL_PEERS[@]}")
CNI_PLUGINS=(main/bridge ipam/host-local main/loopback meta/portmap)

# ---- Go environment, all under the cache dir ----
if [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go; else GO="$(command -v go || true)"; fi
export GOPATH="$DIR/gopath"
export GOCACHE="$DIR/gocache"
export GOMODCACHE="$DIR/gomodcache"
export GOFLAGS="-modcacherw"                # so the cache dir can be removed with rm -rf
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export GOWORK=off
unset GOBIN
export CGO_ENABLED="${CGO_ENABLED:-0}"

log() { printf '[peers] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

summary() {
  cat <<EOF
TWILL_PEERS_DIR=$DIR
TWILL_PEER_CNI_DIR=$DIR/cni
TWILL_PEER_CNITOOL=$DIR/bin/cnitool
TWILL_PEER_FLANNEL_CNI=$DIR/cni/flannel
TWILL_PEER_FLANNELD=$DIR/bin/flanneld
TWILL_PEER_KUBE_APISERVER=$DIR/bin/kube-apiserver
EOF
}

# version+recipe string recorded in the stamp; bump the rN suffix when a recipe changes
stamp_of() {
  case "$1" in
    cni)            echo "$CNI_PLUGINS_VERSION r1" ;;
    cnitool)        echo "$CNITOOL_VERSION r1" ;;
    flannel-cni)    echo "$FLANNEL_CNI_PKG@$FLANNEL_CNI_VERSION r1" ;;
    flanneld)       echo "$FLANNEL_VERSION r3" ;;
    kube-apiserver) echo "$K8S_VERSION r1" ;;
  esac
}

outputs_of() {
  case "$1" in
    cni)            for p in "${CNI_PLUGINS[@]}"; do echo "$DIR/cni/${p##*/}"; done ;;
    cnitool)        echo "$DIR/bin/cnitool" ;;
    flannel-cni)    echo "$DIR/cni/flannel" ;;
    flanneld)       echo "$DIR/bin/flanneld" ;;
    kube-apiserver) echo "$DIR/bin/kube-apiserver" ;;
  esac
}

is_built() {
  local name=$1 f
  [[ -f "$DIR/stamps/$name" ]] || return 1
  [[ "$(cat "$DIR/stamps/$name")" == "$(stamp_of "$name")" ]] || return 1
  while read -r f; do [[ -f "$f" && -x "$f" ]] || return 1; done < <(outputs_of "$name")
}

# move a freshly built file into place (replacing whatever is there, even a directory)
place() {
  [[ -f "$1" ]] || die "expected build output $1 is missing"
  if [[ -d "$2" ]]; then rm -rf "$2"; fi
  mv -f "$1" "$2"
}

# go install into a private GOBIN, then move the result(s) into place.
# usage: gobin_install <staging-dir> [go install args...]
gobin_install() {
  local stage=$1; shift
  rm -rf "$stage"; mkdir -p "$stage"
  GOBIN="$stage" "$GO" install -trimpath "$@"
}

# ---- build steps (each runs in its own bash process, with set -e in force) ----
build_cni() {
  local stage="$DIR/tmp/cni" pkgs=() p
  for p in "${CNI_PLUGINS[@]}"; do pkgs+=("github.com/containernetworking/plugins/plugins/$p@$CNI_PLUGINS_VERSION"); done
  gobin_install "$stage" \
    -ldflags "-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" \
    "${pkgs[@]}"
  for p in "${CNI_PLUGINS[@]}"; do place "$stage/${p##*/}" "$DIR/cni/${p##*/}"; done
}

build_cnitool() {
  local stage="$DIR/tmp/cnitool"
  gobin_install "$stage" -ldflags "-s -w" "github.com/containernetworking/cni/cnitool@$CNITOOL_VERSION"
  place "$stage/cnitool" "$DIR/bin/cnitool"
}

build_flannel-cni() {
  local stage="$DIR/tmp/flannel-cni" bin
  local bvpkg=github.com/containernetworking/plugins/pkg/utils/buildversion
  if [[ "$FLANNEL_CNI_PKG" == github.com/flannel-io/cni-plugin* ]]; then
    bvpkg=github.com/flannel-io/cni-plugin/version   # harmless if absent
  fi
  gobin_install "$stage" -ldflags "-s -w -X $bvpkg.BuildVersion=$FLANNEL_CNI_VERSION" \
    "$FLANNEL_CNI_PKG@$FLANNEL_CNI_VERSION"
  bin="$(find "$stage" -maxdepth 1 -type f -perm -u+x | head -n1)"   # flannel or cni-plugin
  [[ -n "$bin" ]] || die "flannel-cni: go install produced no binary"
  place "$bin" "$DIR/cni/flannel"
}

# flannel's main package imports its Tencent Cloud VPC backend, whose SDK module
# (github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc) the proxy
# reachable here refuses, so `go install flannel@version` fails. Build from a
# copy of the proxy-served flannel module source with that one backend import
# removed (the backend only talks to Tencent Cloud; nothing else changes).
build_flanneld() {
  local src="$DIR/src/flanneld-$FLANNEL_VERSION" mod cgo=0 out="$DIR/tmp/flanneld.bin"
  rm -rf "$out"
  mod="$(cd "$DIR/tmp" && "$GO" mod download -json "github.com/flannel-io/flannel@$FLANNEL_VERSION" \
         | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
  [[ -f "$mod/main.go" ]] || die "flanneld: could not download github.com/flannel-io/flannel@$FLANNEL_VERSION"
  rm -rf "$src"; cp -r "$mod" "$src"; chmod -R u+w "$src"
  sed -i '\#"github.com/flannel-io/flannel/pkg/backend/tencentvpc"#d' "$src/main.go"
  ! grep -q 'pkg/backend/tencentvpc"' "$src/main.go" || die "flanneld: could not drop the tencentvpc import"
  # upstream enables cgo (UDP backend) on amd64; follow it when a C compiler exists
  if [[ "$(uname -m)" == x86_64 ]] && command -v cc >/dev/null; then cgo=1; fi
  (cd "$src" && CGO_ENABLED=$cgo "$GO" build -trimpath \
      -ldflags "-s -w -X github.com/flannel-io/flannel/pkg/version.Version=$FLANNEL_VERSION" \
      -o "$out" .)
  [[ -f "$out" ]] || die "flanneld: go build produced no binary"
  place "$out" "$DIR/bin/flanneld"
}

# k8s.io/kubernetes replaces its k8s.io/* staging modules with ./staging/...
# paths, so `go install ...@version` refuses it. A generated wrapper module
# requires it and maps each staging module to its published v0.X.Y twin.
# Storage: this kube-apiserver runs against Debian's etcd 3.4.23 (checked:
# readyz, create, list, watch); it only logs that etcd < 3.4.31 lacks
# RequestWatchProgress and falls back. No newer etcd is built here.
build_kube-apiserver() {
  local src="$DIR/src/kube-apiserver-wrapper" kmod info commit date minor
  local staging="v0.${K8S_VERSION#v1.}"         # v1.37.2 -> v0.37.2
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  mkdir -p "$src"
  kmod="$(cd "$src" && "$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
          | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
  info="${kmod%.mod}.info"
  [[ -f "$kmod" ]] || die "kube-apiserver: could not download k8s.io/kubernetes@$K8S_VERSION go.mod"
  commit="$(sed -n 's/.*"Hash":"\([0-9a-f]*\)".*/\1/p' "$info" 2>/dev/null || true)"
  date="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$info" 2>/dev/null || true)"
  {
    echo "// Generated by scripts/peers.sh; do not edit. Wrapper to build kube-apiserver $K8S_VERSION."
    echo "module twill.invalid/peers/kube-apiserver-wrapper"
    echo
    echo "go $(sed -n 's/^go \([0-9.]*\)$/\1/p' "$kmod")"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "tool k8s.io/kubernetes/cmd/kube-apiserver"
    echo
    echo "replace ("
    # "	k8s.io/api => ./staging/src/k8s.io/api"  ->  "	k8s.io/api => k8s.io/api v0.37.2"
    sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/src/\(k8s\.io/[^ ]*\)[[:space:]]*$#\t\1 => \2 '"$staging"'#p' "$kmod"
    echo ")"
  } > "$src/go.mod.new"
  grep -q '=> k8s.io/api ' "$src/go.mod.new" || die "kube-apiserver: found no staging replace lines in $kmod"
  if ! cmp -s "$src/go.mod.new" "$src/go.mod"; then
    mv -f "$src/go.mod.new" "$src/go.mod"; rm -f "$src/go.sum"
  else
    rm -f "$src/go.mod.new"
  fi
  log "kube-apiserver: resolving modules (go mod tidy)"
  (cd "$src" && "$GO" mod tidy)
  local ld="-s -w" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean"
    [[ -n "$commit" ]] && ld+=" -X $pkg.gitCommit=$commit"
    [[ -n "$date" ]] && ld+=" -X $pkg.buildDate=$date"
  done
  log "kube-apiserver: compiling (slow: 10-20 min cold on 2 cores)"
  local out="$DIR/tmp/kube-apiserver.bin"
  rm -rf "$out"
  (cd "$src" && CGO_ENABLED=0 "$GO" build -trimpath -ldflags "$ld" \
      -o "$out" k8s.io/kubernetes/cmd/kube-apiserver)
  [[ -f "$out" ]] || die "kube-apiserver: go build produced no binary"
  place "$out" "$DIR/bin/kube-apiserver"
}

run_step() {  # internal: one peer, in its own process
  local name=$1
  mkdir -p "$DIR/bin" "$DIR/cni" "$DIR/stamps" "$DIR/tmp" "$DIR/src"
  rm -f "$DIR/stamps/$name"
  "build_$name"
  stamp_of "$name" > "$DIR/stamps/$name"
}

# ---- main ----
if [[ "${1:-}" == "--_step" ]]; then run_step "$2"; exit 0; fi
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then sed -n '2,15p' "$SELF" | sed 's/^# \{0,1\}//'; exit 0; fi
if [[ "${1:-}" == "--list" ]]; then summary; exit 0; fi

peers=("$@")
[[ ${#peers[@]} -gt 0 ]] || peers=("${ALL_PEERS[@]}")
for n in "${peers[@]}"; do
  [[ " ${KNOWN_PEERS[*]} " == *" $n "* ]] || { log "unknown peer '$n' (known: ${KNOWN_PEERS[*]})"; exit 2; }
done
[[ -n "$GO" && -x "$GO" ]] || die "no go toolchain found (expected /usr/local/go/bin/go)"

mkdir -p "$DIR"
if command -v flock >/dev/null; then
  exec 9>"$DIR/.lock"
  flock -n 9 || { log "another peers.sh holds $DIR/.lock; waiting"; flock 9; }
fi
log "cache dir $DIR; $("$GO" version)"

failed=()
for n in "${peers[@]}"; do
  if is_built "$n"; then
    log "$n: up to date ($(stamp_of "$n")), skipped"
    continue
  fi
  log "$n: building $(stamp_of "$n")"
  start=$(date +%s)
  if bash "$SELF" --_step "$n"; then
    log "$n: built in $(( $(date +%s) - start ))s"
  else
    log "$n: FAILED after $(( $(date +%s) - start ))s"
    failed+=("$n")
  fi
done

summary
if [[ ${#failed[@]} -gt 0 ]]; then
  log "failed peers: ${failed[*]}"
  exit 1
fi
