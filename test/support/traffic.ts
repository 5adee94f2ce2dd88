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

/** A steady ping from one host to an address: how many of `count` came back (a lost packet is a gap in the path). */
export async function pingStream(from: TestHost, to: string, count: number, intervalS = 0.05): Promise<{ sent: number; received: number }> {
  const out = await from.exec('ping', ['-q', '-i', String(intervalS), '-c', String(count), '-W', '1', to]).catch((e: Error) => e.message);
  const m = /(\d+) packets transmitted, (\d+) received/.exec(out);
  if (!m) throw new Error(`no ping summary: ${out}`);
  return { sent: Number(m[1]), received: Number(m[2]) };
}
