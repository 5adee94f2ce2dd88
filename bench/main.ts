// npm run bench -- NAME [options]: side-by-side benchmarks. Each prints tables,
// then, as its very last line, one JSON object with its results.
import { parseArgs } from 'node:util';
import { kernelBench } from './kernel.js';
import { cniBench } from './cni.js';
import { conflistBench } from './conflist.js';
import { explainBench } from './explain.js';
import { agentBench } from './agent.js';
import { labBench } from './lab.js';

const USAGE = `usage: npm run bench -- NAME [options]

benchmarks:
  kernel   veth pairs created into namespaces and deleted: twill vs ip per op vs ip -batch
           --pairs N (200)  --namespaces N (10)
  cni      bridge + host-local ADD/DEL as a runtime runs them: twill vs the reference plugins
           --iterations N (30)  --ipmasq (with ipMasq, iptables)
  conflist kube-flannel's conflist (flannel, then portmap with a hostPort) as a runtime runs it:
           twill (a process per call) and twill served (twill cni serve) vs the reference chain,
           for each portmap backend
           --iterations N (30)  --backend iptables|nftables (default: both)
  agent    the node agent vs flanneld on one etcd: lease → route convergence, and a cold start
           with many leases (time, RSS)   --leases N (100)  --scale N (2000)
  explain  twill explain --format json on a node with many pods (each its own namespace), target ≤ 1 s
           --pods N (200)  --iterations N (5)
  lab      twill lab up 3×2 (seconds), and iperf3 TCP pod→pod across nodes vs node→node on the
           underlay (ratio), per flannel backend
           --seconds N (5)  --backend vxlan|host-gw (default: both)`;

async function main(): Promise<void> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      pairs: { type: 'string', default: '200' },
      namespaces: { type: 'string', default: '10' },
      iterations: { type: 'string' },
      pods: { type: 'string', default: '200' },
      leases: { type: 'string', default: '100' },
      scale: { type: 'string', default: '2000' },
      ipmasq: { type: 'boolean', default: false },
      backend: { type: 'string' },
      seconds: { type: 'string', default: '5' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const name = positionals[0];
  if (values.help || !name) {
    console.log(USAGE);
    return;
  }
  if (process.getuid?.() !== 0) throw new Error('benchmarks need root: they create network namespaces');
  const int = (v: string, what: string, min: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${what} must be an integer ≥ ${min}, got "${v}"`);
    return n;
  };
  switch (name) {
    case 'kernel': {
      const result = await kernelBench({ pairs: int(values.pairs, 'pairs', 1), namespaces: int(values.namespaces, 'namespaces', 1) });
      console.log(JSON.stringify(result));
      break;
    }
    case 'cni': {
      const result = await cniBench({ iterations: int(values.iterations ?? '30', 'iterations', 2), ipMasq: values.ipmasq });
      console.log(JSON.stringify(result));
      break;
    }
    case 'conflist': {
      const b = values.backend;
      if (b !== undefined && b !== 'iptables' && b !== 'nftables') throw new Error(`--backend must be iptables or nftables, got "${b}"`);
      const result = await conflistBench({ iterations: int(values.iterations ?? '30', 'iterations', 2), backends: b ? [b] : ['iptables', 'nftables'] });
      console.log(JSON.stringify(result));
      break;
    }
    case 'agent': {
      const result = await agentBench({ leases: int(values.leases, 'leases', 1), scale: int(values.scale, 'scale', 1) });
      console.log(JSON.stringify(result));
      break;
    }
    case 'explain': {
      const result = await explainBench({ pods: int(values.pods, 'pods', 1), iterations: int(values.iterations ?? '5', 'iterations', 1) });
      console.log(JSON.stringify(result));
      break;
    }
    case 'lab': {
      const b = values.backend;
      if (b !== undefined && b !== 'vxlan' && b !== 'host-gw') throw new Error(`--backend must be vxlan or host-gw, got "${b}"`);
      const result = await labBench({ backends: b ? [b] : ['vxlan', 'host-gw'], seconds: int(values.seconds, 'seconds', 1) });
      console.log(JSON.stringify(result));
      break;
    }
    default:
      throw new Error(`unknown benchmark "${name}"\n${USAGE}`);
  }
}

main().catch((err: unknown) => {
  console.error(`bench: ${(err as Error).message}`);
  process.exit(1);
});
