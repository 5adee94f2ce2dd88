#!/usr/bin/env bash
# scripts/build-image.sh — builds twill's OCI image, localhost/twill:<version>, the
# image deploy/kube-twill.yml runs. Offline and without a daemon: Debian's buildah,
# FROM scratch, from what this checkout and this machine already have:
#
#   /usr/bin/twill                 the single executable (scripts/build-sea.mjs; reused when
#                                  it is up to date): the CLI, the CNI plugins (`twill cni
#                                  install` copies it onto the node) and the agent
#   /usr/lib/twill/node_modules    the agent's own packages, which the single executable
#                                  does not hold (src/agent/modules.ts finds them there)
#   /usr/sbin/iptables*, ip6tables*  this machine's iptables, nft and legacy variants
#                                  (xtables-*-multi and the xtables modules; the plain names
#                                  are the nft variant, Debian's default), and nft: the
#                                  agent's masquerade and forward rules
#   /usr/bin/sh, cp, mv            the install-cni-conf init container's command
#   the shared libraries of all of the above (ldd) and the dynamic loader, at their
#   paths (with /bin, /lib, ... as symlinks where this machine has merged /usr)
#
#   scripts/build-image.sh [--root DIR] [--runroot DIR] [--storage-driver NAME]
#                          [--oci-archive FILE] [--source URL]
#
# --root, --runroot, --storage-driver   container storage options, passed to buildah
#                   (default: buildah's own, /var/lib/containers/storage for root); also
#                   TWILL_IMAGE_ROOT, TWILL_IMAGE_RUNROOT, TWILL_IMAGE_STORAGE_DRIVER
# --oci-archive FILE  also write the image to FILE (an OCI archive named
#                   localhost/twill:<version>) for nodes: `podman load -i FILE`, or
#                   `ctr -n k8s.io images import FILE` on containerd
# --source URL      the org.opencontainers.image.source label (default: package.json's
#                   repository, else the git remote "origin"; none: no label)
#
# Progress goes to stderr; the image's ID to stdout. Needs root for buildah's default
# storage (or --root/--runroot where the user may write), Node (the single executable
# is built with the running Node), ldd.
set -euo pipefail
# The staged files keep their modes in the image: not a umask of the caller's.
umask 022

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STARTED=$SECONDS

log() { printf '[image %3ss] %s\n' "$((SECONDS - STARTED))" "$*" >&2; }
die() { printf 'build-image: %s\n' "$*" >&2; exit 1; }
# usage [STATUS]: the comment above; on stdout when asked for (--help), else on stderr.
usage() {
  local text
  text="$(sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//')"
  if [ "${1:-2}" = 0 ]; then printf '%s\n' "$text"; else printf '%s\n' "$text" >&2; fi
  exit "${1:-2}"
}

STORAGE_ROOT="${TWILL_IMAGE_ROOT:-}"
STORAGE_RUNROOT="${TWILL_IMAGE_RUNROOT:-}"
STORAGE_DRIVER="${TWILL_IMAGE_STORAGE_DRIVER:-}"
ARCHIVE=""
SOURCE_URL=""
while [ $# -gt 0 ]; do
  case "$1" in
    --root|--runroot|--storage-driver|--oci-archive|--source)
      [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (see --help)"
      case "$1" in
        --root) STORAGE_ROOT=$2 ;;
        --runroot) STORAGE_RUNROOT=$2 ;;
        --storage-driver) STORAGE_DRIVER=$2 ;;
        --oci-archive) ARCHIVE=$2 ;;
        --source) SOURCE_URL=$2 ;;
      esac
      shift 2 ;;
    --root=*) STORAGE_ROOT=${1#*=}; shift ;;
    --runroot=*) STORAGE_RUNROOT=${1#*=}; shift ;;
    --storage-driver=*) STORAGE_DRIVER=${1#*=}; shift ;;
    --oci-archive=*) ARCHIVE=${1#*=}; shift ;;
    --source=*) SOURCE_URL=${1#*=}; shift ;;
    -h|--help) usage 0 ;;
    *) printf 'build-image: unknown argument: %s\n' "$1" >&2; usage ;;
  esac
done

command -v buildah >/dev/null || die "buildah is missing: it builds the image without a daemon (Debian: apt-get install buildah; .ci/run installs it)"
command -v ldd >/dev/null || die "ldd is missing (Debian: apt-get install libc-bin): it finds the shared libraries the image needs"
command -v node >/dev/null || die "node is missing: the single executable is built from the running Node (README.md, Requirements)"

STORAGE=()
[ -n "$STORAGE_ROOT" ] && STORAGE+=(--root "$STORAGE_ROOT")
[ -n "$STORAGE_RUNROOT" ] && STORAGE+=(--runroot "$STORAGE_RUNROOT")
[ -n "$STORAGE_DRIVER" ] && STORAGE+=(--storage-driver "$STORAGE_DRIVER")
bah() { buildah "${STORAGE[@]}" "$@"; }

VERSION="$(node -p 'require(process.argv[1]).version' "$ROOT/package.json")"
IMAGE="localhost/twill:$VERSION"
for cmd in xtables-nft-multi xtables-legacy-multi nft; do
  [ -x "/usr/sbin/$cmd" ] || die "/usr/sbin/$cmd is missing: the image takes this machine's iptables and nftables (Debian: apt-get install iptables nftables)"
done
# The xtables modules (matches and targets, dlopen'ed) sit beside libxtables, in the
# machine's triplet directory on Debian: /usr/lib/x86_64-linux-gnu/xtables.
LIBXTABLES="$(ldd /usr/sbin/xtables-nft-multi | awk '$1 ~ /^libxtables\.so/ && $3 ~ /^\// { print $3 }')"
XTABLES_DIR="$(dirname -- "$(realpath -e -- "${LIBXTABLES:-/nonexistent}" 2>/dev/null || echo /nonexistent/x)")/xtables"
[ -d "$XTABLES_DIR" ] || die "no xtables modules beside libxtables (${LIBXTABLES:-not found by ldd}): iptables cannot load its matches and targets without them (Debian: apt-get install iptables)"

STAGE="$(mktemp -d "${TMPDIR:-/tmp}/twill-image.XXXXXX")"
CONTAINER=""
cleanup() {
  local status=$?
  [ -n "$CONTAINER" ] && bah rm "$CONTAINER" >/dev/null 2>&1 || true
  rm -rf "$STAGE"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- the root file system, staged in a directory ----

# Where /usr is merged (Debian 12: /bin -> usr/bin, /lib64 -> usr/lib64, ...), the
# same symlinks in the image: ldd names libraries by either path.
for d in bin sbin lib lib32 lib64 libx32; do
  if [ -L "/$d" ]; then ln -s "$(readlink "/$d")" "$STAGE/$d"; fi
done

# add PATH: PATH into the stage at its own path. Directories are taken by their real
# path (the symlinks above cover /lib/...); a symlink is recreated as it is, and its
# target added too (libfoo.so.1 -> libfoo.so.1.2.3, the loader's /lib64 link).
add() {
  local path=$1 dir base target
  dir="$(realpath -e -- "$(dirname -- "$path")")" || die "$path: no such directory"
  base="$(basename -- "$path")"
  path="$dir/$base"
  if [ -e "$STAGE$path" ] || [ -L "$STAGE$path" ]; then return 0; fi
  [ -e "$path" ] || [ -L "$path" ] || die "$path is missing on this machine"
  mkdir -p "$STAGE$dir"
  if [ -L "$path" ]; then
    target="$(readlink -- "$path")"
    ln -s -- "$target" "$STAGE$path"
    case "$target" in
      /*) add "$target" ;;
      *) add "$dir/$target" ;;
    esac
  else
    cp --preserve=mode,timestamps -- "$path" "$STAGE$path"
  fi
}

# Every executable and library staged above, for one ldd pass at the end.
ELF=()

# add_libs: the shared libraries the files in ELF load, each with add (ldd prints
# "libc.so.6 => /lib/... (0x...)", and the loader by its path; with several files,
# a "FILE:" line before each). A library ldd cannot find fails the build.
add_libs() {
  local out lib
  # ldd's status is 1 when any file is static (busybox-like): its output still lists the others.
  out="$(ldd -- "$@" 2>&1)" || true
  if grep -q 'not found' <<<"$out"; then die "ldd: a library is missing on this machine: $(grep -e 'not found' <<<"$out" | tr -s ' \t' ' ')"; fi
  if grep -q -e 'ldd: ' <<<"$out"; then die "ldd failed: $(grep -e 'ldd: ' <<<"$out")"; fi
  while read -r lib; do
    add "$lib"
  done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3; next } $1 ~ /^\// && $1 !~ /:$/ { print $1 }' <<<"$out" | sort -u)
}

log "the single executable (scripts/build-sea.mjs, rebuilt only when the sources changed)"
SEA="$(cd "$ROOT" && node scripts/build-sea.mjs --if-stale --print-path)" || die "cannot build the single executable (scripts/build-sea.mjs needs \"npm ci\", with the dev dependencies)"
mkdir -p "$STAGE/usr/bin"
cp --preserve=mode -- "$SEA" "$STAGE/usr/bin/twill"
ELF+=("$SEA")

log "the agent's packages (scripts/agent-modules.mjs)"
ADDONS="$(node "$ROOT/scripts/agent-modules.mjs" "$STAGE/usr/lib/twill")" || die "cannot copy the agent's packages (above)"
# The addons inside the single executable are written out and loaded at run time: their libraries too.
NATIVE="$(cd "$ROOT" && node --input-type=module -e '
  import { createRequire } from "node:module";
  import { dirname, join } from "node:path";
  const require = createRequire(join(process.cwd(), "package.json"));
  const dir = dirname(require.resolve("netlink/package.json"));
  console.log(join(process.cwd(), "native", "build", "Release", "twill_netns.node"));
  console.log(createRequire(join(dir, "package.json"))("node-gyp-build").path(dir));
')" || die "cannot find the native addons (run \"npm ci\")"
while read -r addon; do
  if [ -n "$addon" ]; then ELF+=("$addon"); fi
done <<<"$ADDONS
$NATIVE"

log "iptables (nft and legacy, $XTABLES_DIR), nft, sh, cp, mv"
for variant in nft legacy; do
  for cmd in iptables ip6tables; do
    for suffix in "" -save -restore; do
      add "/usr/sbin/$cmd-$variant$suffix"
    done
  done
  ELF+=("/usr/sbin/xtables-$variant-multi")
done
# The plain names, as Debian's alternatives have them by default: the nft variant.
# twill itself always runs a variant by its own name (src/firewall/detect.ts decides which).
for cmd in iptables ip6tables; do
  for suffix in "" -save -restore; do
    ln -s "$cmd-nft$suffix" "$STAGE/usr/sbin/$cmd$suffix"
  done
done
mkdir -p "$STAGE$XTABLES_DIR"
cp --preserve=mode,timestamps -- "$XTABLES_DIR"/*.so "$STAGE$XTABLES_DIR/"
ELF+=("$XTABLES_DIR"/*.so)
add /usr/sbin/nft
ELF+=(/usr/sbin/nft)
SH="$(realpath -e /bin/sh)"
add "$SH"
ELF+=("$SH")
[ "$(basename "$SH")" = sh ] || ln -s "$(basename "$SH")" "$STAGE/usr/bin/sh"
for cmd in cp mv; do
  add "$(command -v "$cmd")"
  ELF+=("$(command -v "$cmd")")
done
add_libs "${ELF[@]}"

# Name lookups: iptables and nft read protocol and service names, glibc the order of
# its sources. The runtime mounts /etc/hosts and /etc/resolv.conf.
mkdir -p "$STAGE/etc"
for f in /etc/protocols /etc/services /etc/ethertypes; do
  if [ -f "$f" ]; then cp -- "$f" "$STAGE$f"; fi
done
printf 'hosts: files dns\nprotocols: files\nservices: files\n' >"$STAGE/etc/nsswitch.conf"
# /tmp: where the single executable writes its native addons when /var/lib/twill is
# not mounted (the install-cni-plugins init container); /run: the xtables lock.
mkdir -p "$STAGE/tmp" "$STAGE/run" "$STAGE/var/lib/twill"
chmod 1777 "$STAGE/tmp"
ln -s ../run "$STAGE/var/run"

# ---- the image ----

labels=(
  --label "org.opencontainers.image.title=twill"
  --label "org.opencontainers.image.description=twill: a pod network for Kubernetes (flannel- and CNI-compatible): the node agent and the CNI plugins"
  --label "org.opencontainers.image.version=$VERSION"
  --label "org.opencontainers.image.licenses=$(node -p 'require(process.argv[1]).license ?? ""' "$ROOT/package.json")"
)
if [ -z "$SOURCE_URL" ]; then
  SOURCE_URL="$(node -p 'const r = require(process.argv[1]).repository; (typeof r === "string" ? r : r?.url) ?? ""' "$ROOT/package.json")"
fi
if [ -z "$SOURCE_URL" ] && git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
  SOURCE_URL="$(git -C "$ROOT" remote get-url origin 2>/dev/null || true)"
fi
if [ -n "$SOURCE_URL" ]; then
  labels+=(--label "org.opencontainers.image.source=$SOURCE_URL")
else
  log "no source URL (no --source, no repository in package.json, no git remote origin): no org.opencontainers.image.source label"
fi
if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
  REVISION="$(git -C "$ROOT" rev-parse HEAD)"
  # Built from changes not committed: the commit alone would not say what is inside.
  if [ -n "$(git -C "$ROOT" status --porcelain -- src scripts package.json package-lock.json native 2>/dev/null)" ]; then REVISION="$REVISION-dirty"; fi
  labels+=(--label "org.opencontainers.image.revision=$REVISION")
fi

log "buildah from scratch${STORAGE:+ (${STORAGE[*]})}"
CONTAINER="$(bah from --quiet scratch)" || die "buildah from scratch failed (above)"
log "buildah copy ($(du -sh "$STAGE" | cut -f1))"
chmod 755 "$STAGE" # mktemp's 0700 would become the image's /
bah copy --quiet --chown 0:0 "$CONTAINER" "$STAGE" / >/dev/null
# ENTRYPOINT twill: `podman run IMAGE agent ...` as on a command line. The
# DaemonSet's containers give a `command` of their own (twill from PATH, and sh),
# which replaces it.
bah config \
  --entrypoint '["/usr/bin/twill"]' \
  --cmd '["--help"]' \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --workingdir / \
  --created-by "scripts/build-image.sh" \
  "${labels[@]}" \
  "$CONTAINER"
log "buildah commit $IMAGE"
ID="$(bah commit --quiet --rm --identity-label=false "$CONTAINER" "$IMAGE")" || die "buildah commit failed (above)"
CONTAINER=""

if [ -n "$ARCHIVE" ]; then
  log "buildah push $IMAGE oci-archive:$ARCHIVE"
  mkdir -p "$(dirname -- "$ARCHIVE")"
  rm -f -- "$ARCHIVE"
  bah push --quiet "$IMAGE" "oci-archive:$ARCHIVE:$IMAGE" || die "buildah push to $ARCHIVE failed (above)"
fi

log "built $IMAGE ($ID)${ARCHIVE:+, archive $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1))}"
printf '%s\n' "$ID"
