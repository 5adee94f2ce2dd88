// The kernel layer: typed objects in, typed objects out. Nothing above sees a Buffer.
export { Handle } from './handle.js';
export { Netns, openNetns, createNetns, deleteNetns, netnsExists, listNetns, listAllNetns, netnsKeyOf, openNetnsRef, NETNS_RUN_DIR, type NetnsRef } from './netns.js';
export { KernelError, isExists, isNotFound, type KernelErrorKind } from './errors.js';
export type { Link, LinkRef, LinkSpec, LinkAttrs, BridgePortAttrs, BridgeSpec, VethSpec, VxlanSpec, VethPeer, VxlanInfo, OperState } from './link.js';
export type { BridgeInfo, BridgeVlan, BridgeVlanSpec, BridgePortVlans } from './link.js';
export { VLAN_ID_MIN, VLAN_ID_MAX, type BridgeVlanOptions } from './bridgevlan_linux.js';
export { VXLAN_DEFAULT_PORT, IFNAME_MAX } from './link.js';
export type { Addr, AddrOptions } from './addr.js';
export type { Route, RouteSpec, RouteFilter, RouteScope } from './route.js';
export type { Neigh, FdbEntry } from './neigh.js';
export { Watcher, type KernelEvent, type WatchTopic, type ChangeType } from './watch.js';
export { readSysctl, writeSysctl, sysctlPath } from './sysctl.js';
export { readProcNet } from './procnet.js';
export type { Family } from './ip.js';
export { parseIp } from './ip.js';
export type { NftChainSummary, NftExpr, NftFamily, NftRuleSpec, NftRuleSummary, NftTableSummary } from './nftables.js';
export { appendNftRules, encodeNftRule, readNftTable } from './nftables_linux.js';
