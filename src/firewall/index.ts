// The firewall layer: masquerade (and later port-mapping and forward) rules, on
// iptables (legacy or nft, detected) or nftables, inside a given network namespace.
export { openFirewall } from './firewall.js';
export { chooseBackend, detectIptablesVariant, supportsIptables, supportsNftables } from './detect.js';
export { masqChainName, masqComment, nftInstanceHash, nftMasqComment, NFT_MASQ_TABLE, NFT_MASQ_CHAIN } from './names.js';
export {
  FirewallError,
  FIREWALL_BACKENDS,
  type ContainerMasq,
  type ContainerMasqRef,
  type Firewall,
  type FirewallBackendName,
  type IpFamily,
  type IptablesVariant,
  type OwnedMasquerade,
} from './types.js';
export { openPortmapper } from './portmap_firewall.js';
export { dnatChainName, dnatComment, NFT_PM_TABLE, PM_DNAT_CHAIN, PM_MASQ_CHAIN, PM_SETMARK_CHAIN, DEFAULT_MARK_MASQ_BIT } from './portmap_names.js';
export { PORT_PROTOCOLS, type ContainerPortmap, type ContainerPortmapRef, type PortMapping, type PortProtocol, type Portmapper } from './types.js';
export {
  NftablesSpoofCheck,
  spoofCheckId,
  spoofComment,
  spoofIfaceChain,
  spoofMacChain,
  NFT_SPOOF_TABLE,
  NFT_SPOOF_BASE_CHAIN,
  type SpoofCheck,
  type SpoofCheckRef,
} from './spoofcheck_nftables.js';
export { openClusterRules, type ClusterRulesOptions } from './cluster_rules.js';
export {
  FLANNEL_FWD_CHAIN,
  FLANNEL_FWD_COMMENT,
  FLANNEL_MASQ_CHAIN,
  FLANNEL_MASQ_COMMENT,
  FLANNEL_NFT_FORWARD,
  FLANNEL_NFT_POSTRTG,
  FLANNEL_NFT_TABLE,
  KUBE_PROXY_MARK,
} from './cluster_names.js';
export type { ClusterCidrs, ClusterFirewallName, ClusterRules, ClusterRulesSpec, Correction } from './types.js';
