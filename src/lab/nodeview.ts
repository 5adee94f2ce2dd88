// What a lab node's own processes (its agent, its CNI plugins, `lab exec NODE`)
// see: the node's own /run/flannel and /var/lib/cni (and /etc/cni where the
// host has one) at their default paths, as on a real node, with nothing of the
// host's touched.
//
// `ip netns exec` already gives each command a mount namespace of its own whose
// mounts never reach the host. A bind mount needs its mount point to exist, and
// /run/flannel or /var/lib/cni must not be created on the host: so /run and
// /var/lib are covered with a fresh tmpfs holding just the mount points, and
// what must stay visible (/run/netns for the pods' namespaces, /run/twill for
// the lab itself) is bound back from a stash of the originals.
const SCRIPT = `set -e
node="$1"; shift
stash=$(mktemp -d /tmp/.twill-node-XXXXXX)
mount --rbind /run "$stash"
mount -t tmpfs -o mode=0755 twill-node-run /run
mkdir -p /run/netns /run/twill /run/flannel
if [ -d "$stash/netns" ]; then mount --rbind "$stash/netns" /run/netns; fi
if [ -d "$stash/twill" ]; then mount --rbind "$stash/twill" /run/twill; fi
umount -l "$stash"
mount --rbind /var/lib "$stash"
mount -t tmpfs -o mode=0755 twill-node-varlib /var/lib
mkdir -p /var/lib/cni
umount -l "$stash"
rmdir "$stash"
mount --bind "$node/run/flannel" /run/flannel
mount --bind "$node/var/lib/cni" /var/lib/cni
if [ -d /etc/cni ]; then mount --bind "$node/etc/cni" /etc/cni; fi
exec "$@"`;

/** The command prefix (after `ip netns exec NETNS`) that runs the rest in the node's view. */
export function nodeView(nodeDir: string): string[] {
  return ['sh', '-c', SCRIPT, 'twill-node', nodeDir];
}
