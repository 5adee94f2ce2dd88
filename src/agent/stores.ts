// Opens the store an agent was told to use. Each kind is imported only when
// chosen: an agent on etcd never loads SQLite, and the other way round.
import type { SubnetStore } from '../subnet/store.js';
import type { StoreSpec } from './options.js';

export async function openStore(spec: StoreSpec): Promise<SubnetStore> {
  switch (spec.kind) {
    case 'local': {
      const { LocalStore } = await import('../subnet/local-store.js');
      return new LocalStore(spec.path);
    }
    case 'etcd': {
      const { EtcdStore } = await import('../subnet/etcd-store.js');
      const opt = <T>(v: T | null) => v ?? undefined;
      return new EtcdStore({
        endpoints: spec.endpoints, prefix: spec.prefix,
        caFile: opt(spec.caFile), certFile: opt(spec.certFile), keyFile: opt(spec.keyFile),
        username: opt(spec.username), password: opt(spec.password),
      });
    }
    case 'kube': {
      const { KubeStore } = await import('../subnet/kube-store.js');
      return new KubeStore({
        apiUrl: spec.apiUrl, kubeconfigFile: spec.kubeconfigFile, nodeName: spec.nodeName, annotationPrefix: spec.annotationPrefix,
        setNodeNetworkUnavailable: spec.setNodeNetworkUnavailable, publicIpFlags: spec.publicIpFlags,
      });
    }
  }
}
