// Traffic between test hosts, seen from the receiving end.
import { spawn } from 'node:child_process';
import type { TestHost } from './hosts.js';

/** What the pod at `to` sees as the sender of one UDP datagram from `from` (the address, without NAT, is the sender pod's own). */
export function sourceSeenBy(to: TestHost, toIp: string, from: TestHost): Promise<string> {
  const udp = toIp.includes(':') ? 'udp6' : 'udp4';
  const serverJs = "const s=require('dgram').createSocket('" + udp + "');s.on('message',(m,r)=>{console.log('from '+r.address);process.exit(0)});s.bind(9999,()=>console.log('ready'));setTimeout(()=>process.exit(3),5000)";
  const clientJs = `require('dgram').createSocket('${udp}').send('x',9999,'${toIp}',()=>process.exit(0))`;
  return new Promise((resolve, reject) => {
    const server = spawn('ip', ['netns', 'exec', to.name, process.execPath, '-e', serverJs], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let sent = false;
    server.stderr.on('data', (d: Buffer) => (err += d.toString()));
    server.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!sent && out.includes('ready')) {
        sent = true;
        from.exec(process.execPath, ['-e', clientJs]).catch(reject);
      }
    });
    server.on('close', (code) => {
      const seen = /from (\S+)/.exec(out);
      if (seen) resolve(seen[1]!);
      else reject(new Error(`the UDP server in ${to.name} got nothing (exit ${code}): ${out} ${err}`));
    });
  });
}
