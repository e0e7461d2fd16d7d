/**
 * The floor of a UDP relay in Node: the least JavaScript a datagram can cost, to show how far
 * any Node proxy can get above the naive relay (issue 16's "1.2 x naive" on UDP). Everything a
 * proxy needs beyond moving bytes is left out: no selection, limits, stats, events, timers per
 * datagram, clock reads, error handling beyond ignoring; one connected upstream socket per client
 * port (a benchmark's clients are all on one address). Datagrams are read and written on libuv's
 * UDP handles directly, as l4proxy's default relay does (src/udp/udpHandle.ts), and the listening
 * socket's `onmessage` is taken from `dgram` (no `emit`, no `rinfo.size`), which l4proxy does not
 * do. What is left is Node's own work per datagram (the Buffer, `rinfo`'s object and address
 * string, the callback scope) and the kernel's.
 *
 * argv: upstream port, responses per session (0 = unlimited). Sends `{ port }` over IPC.
 */
import dgram from 'node:dgram';
import { dgramHandle, sendDatagram, udpBindings } from '../../src/udp/udpHandle.js';
import type { SendOwner, UdpHandle } from '../../src/udp/udpHandle.js';

const upstreamPort = Number(process.argv[2]);
const responses = Number(process.argv[3] ?? 0);
const bindings = udpBindings();
if (bindings === null) throw new Error('floorUdp: the udp_wrap binding is not available here');
const { UDP } = bindings;

/** A client's upstream socket and what is needed to answer it. */
interface Flow {
  readonly handle: UdpHandle;
  readonly port: number;
  readonly address: string;
  left: number;
  /** Seen since the last sweep. */
  touched: boolean;
}

const flows = new Map<number, Flow>();
const ignoreSent: SendOwner = { handleSent: () => undefined };
const server = dgram.createSocket('udp4');
server.on('error', () => undefined);

function openFlow(port: number, address: string): Flow {
  const handle = new UDP();
  const flow: Flow = { handle, port, address, left: responses, touched: true };
  handle.onmessage = (nread, _handle, reply) => {
    if (nread < 0 || reply === undefined) return;
    sendDatagram(listening, [reply], ignoreSent, flow.port, flow.address);
    if (responses > 0 && --flow.left === 0) closeFlow(flow);
  };
  handle.connect('127.0.0.1', upstreamPort);
  handle.recvStart();
  flows.set(port, flow);
  return flow;
}

function closeFlow(flow: Flow): void {
  flows.delete(flow.port);
  flow.handle.close();
}

let listening: UdpHandle;

server.bind(0, '127.0.0.1', () => {
  const handle = dgramHandle(server);
  if (handle === undefined) throw new Error('floorUdp: no handle under the dgram socket');
  listening = handle;
  handle.onmessage = (nread, _handle, msg, rinfo?: { address: string; port: number }) => {
    if (nread < 0 || msg === undefined || rinfo === undefined) return;
    const flow = flows.get(rinfo.port) ?? openFlow(rinfo.port, rinfo.address);
    flow.touched = true;
    sendDatagram(flow.handle, [msg], ignoreSent);
  };
  process.send?.({ port: server.address().port });
});

// Sessions idle for a whole sweep (10-20 s) go, as the naive relay's do (without its clock read
// per datagram).
setInterval(() => {
  for (const flow of flows.values()) {
    if (flow.touched) flow.touched = false;
    else closeFlow(flow);
  }
}, 10_000).unref();
process.once('SIGTERM', () => process.exit(0));
