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
