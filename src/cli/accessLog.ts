import type { TcpProxy } from '../tcp/TcpProxy.js';
import type { UdpProxy } from '../udp/UdpProxy.js';
import type { TcpConnectionInfo } from '../tcp/events.js';
import type { UdpSessionInfo } from '../udp/events.js';
import { compileFormat } from './accessLogFormat.js';
import type { AccessLogSettings, AccessLogType, AccessRecord } from './accessLogFormat.js';
import type { ListenerConfig } from './config.js';
import type { Logger } from './jsonLogger.js';
import {
  closeTime,
  durationSlot,
  tcpSummaryMembers,
  tcpSummaryPatch,
  udpSummaryMembers,
  udpSummaryPatch,
} from './accessLine.js';
import { formatHostPort } from './address.js';
import type { UpstreamCandidate } from '../upstream/UpstreamState.js';
import type { UpstreamHealthChange } from '../upstream/UpstreamManager.js';

/** Where a proxy's lines go: the access log and the operations log. */
export interface ProxyLogs {
  readonly access: Logger;
  readonly ops: Logger;
}

/**
 * Wires a proxy's events to the logs: one access line per closed connection or session on
 * `access` (level info), rejections and upstream errors at debug and proxy errors at error on `ops`.
 */
export function observeProxy(
  logs: ProxyLogs,
  listener: ListenerConfig,
  proxy: TcpProxy | UdpProxy,
  settings?: AccessLogSettings,
): void {
  const { access, ops } = logs;
  const base = { listener: listener.name, protocol: listener.protocol };
  // The access line's leading members, encoded once per listener with the line's opening.
  const lead = `,"listener":${JSON.stringify(listener.name)},"protocol":"${listener.protocol}"`;
  const logged = access.enabled('info');
  const onError = (err: Error): void => {
    ops.error('proxy error', { ...base, err });
  };
  if (settings !== undefined) {
    if ('connections' in proxy) proxy.on('error', onError);
    else proxy.on('error', onError);
    observeWithSettings(logs, listener, proxy, settings);
    return;
  }
  if (listener.protocol === 'tcp') {
    const tcp = proxy as TcpProxy;
    tcp.on('error', onError);
    if (logged) {
      const write = access.lineWriter('info', 'connection closed', tcpSummaryMembers, {
        lead,
        patch: tcpSummaryPatch,
        slot: durationSlot,
        time: closeTime,
      });
      tcp.on('connectionClose', write);
    }
    logFailures(ops, base, tcp);
    return;
  }
  const udp = proxy as UdpProxy;
  udp.on('error', onError);
  if (logged) {
    const write = access.lineWriter('info', 'session closed', udpSummaryMembers, {
      lead,
      patch: udpSummaryPatch,
      slot: durationSlot,
      time: closeTime,
    });
    udp.on('sessionClose', write);
  }
  logFailures(ops, base, udp);
}

/** The members every operations line of a listener starts with. */
export interface ListenerMembers {
  readonly listener: string;
  readonly protocol: 'tcp' | 'udp';
}

/**
 * Rejections (TCP) and upstream errors at debug on the operations log, whatever the access log;
 * upstream source (DNS) errors at warn, as {@link sourceErrorLogger} limits them.
 */
function logFailures(ops: Logger, base: ListenerMembers, proxy: TcpProxy | UdpProxy): void {
  const sourceError = sourceErrorLogger(ops, base);
  const health = healthLogger(ops, base);
  if ('connections' in proxy) {
    proxy.on('upstreamHealth', health);
    proxy.on('upstreamSourceError', sourceError);
    proxy.on('rejected', (rejection) => {
      if (!ops.enabled('debug')) return;
      const { error, ...rest } = rejection;
      ops.log('debug', 'connection rejected', { ...base, ...rest, ...(error && { err: error }) });
    });
    proxy.on('upstreamError', (connection, upstream, err) => {
      ops.log('debug', 'upstream connect failed', {
        ...base,
        id: connection.id,
        upstream: upstream.id,
        err,
      });
    });
    return;
  }
  proxy.on('upstreamHealth', health);
  proxy.on('upstreamSourceError', sourceError);
  proxy.on('upstreamError', (session, upstream, err) => {
    ops.log('debug', 'upstream error', { ...base, id: session.id, upstream: upstream.id, err });
  });
}

/**
 * Logs each flip of an upstream's health verdict: `upstream unhealthy` at warn, `upstream healthy`
 * at info. A flip happens once per outage (health checks' thresholds, outlier ejections), so an
 * upstream that goes down is one line here, where the access log has a line per connection.
 */
function healthLogger(
  ops: Logger,
  base: ListenerMembers,
): (upstream: UpstreamCandidate, healthy: boolean, change: UpstreamHealthChange) => void {
  return (upstream, healthy, change) => {
    ops.log(healthy ? 'info' : 'warn', healthy ? 'upstream healthy' : 'upstream unhealthy', {
      ...base,
      upstream: upstream.id,
      address: formatHostPort(upstream.host, upstream.port),
      source: change.source,
      detail: change.detail,
      // Whether it may be chosen now: healthy by one source, it may still be out by the other.
      selectable: upstream.healthy,
      ...(change.error !== undefined && { err: change.error }),
    });
  };
}

/** How often an upstream source error that keeps repeating is logged again. */
const SOURCE_ERROR_REPEAT_INTERVAL = 60_000;

/**
 * Logs a listener's upstream source errors (a `dns` block that cannot resolve) at warn: an error
 * is logged when its message is new, and while the same message repeats (one per lookup, every
 * `refreshInterval`) once per `interval`, with how many were not logged (`repeated`). An outage
 * is a line a minute, not a line per lookup; metrics count every one.
 */
export function sourceErrorLogger(
  ops: Logger,
  base: ListenerMembers | { readonly listener: string; readonly protocol: 'tunnel' },
  interval = SOURCE_ERROR_REPEAT_INTERVAL,
  now: () => number = Date.now,
): (err: Error) => void {
  let last: string | undefined;
  let loggedAt = 0;
  let repeated = 0;
  return (err) => {
    const time = now();
    const same = err.message === last;
    if (same && time - loggedAt < interval) {
      repeated++;
      return;
    }
    ops.warn('upstream source error', { ...base, err, ...(same && { repeated }) });
    last = err.message;
    loggedAt = time;
    repeated = 0;
  };
}

/** Writes access lines: JSON through the logger, or text lines for a format string. */
interface AccessWriter {
  write(type: AccessLogType, msg: string, record: AccessRecord): void;
}

function accessWriter(access: Logger, settings: AccessLogSettings): AccessWriter {
  if (settings.format !== undefined) {
    const render = compileFormat(settings.format);
    const newline = settings.format.endsWith('\n') ? '' : '\n';
    return {
      write(type, _msg, record) {
        // Through the access log's buffer, as JSON lines are: one write(2) per 100 ms.
        if (access.enabled('info')) access.text('info', render(record, type) + newline);
      },
    };
  }
  const fields = settings.fields;
  return {
    write(_type, msg, record) {
      const { error, upstream, ...rest } = record;
      const line: Record<string, unknown> = {
        ...rest,
        upstream:
          typeof upstream === 'object' && upstream !== null
            ? (upstream as { id: string }).id
            : upstream,
        ...(error instanceof Error && { err: error }),
      };
      if (fields === undefined) {
        access.info(msg, line);
        return;
      }
      const picked: Record<string, unknown> = {};
      for (const name of fields) if (line[name] !== undefined) picked[name] = line[name];
      access.info(msg, picked);
    },
  };
}

/** What a line shows of a live connection or session (periodic and connect lines). */
function liveRecord(
  base: ListenerMembers,
  item: TcpConnectionInfo | UdpSessionInfo,
  connectTimeMs: number | undefined,
): AccessRecord {
  const upstream = item.upstream;
  return {
    ...base,
    id: item.id,
    clientAddress: item.clientAddress,
    clientPort: item.clientPort,
    localAddress: item.localAddress,
    localPort: item.localPort,
    ...('peerAddress' in item && { peerAddress: item.peerAddress, peerPort: item.peerPort }),
    ...('serverName' in item && { serverName: item.serverName }),
    ...('attempts' in item && { attempts: item.attempts }),
    upstream: upstream && { id: upstream.id, host: upstream.host, port: upstream.port },
    bytesFromClient: item.bytesFromClient,
    bytesToClient: item.bytesToClient,
    ...('datagramsFromClient' in item && {
      datagramsFromClient: item.datagramsFromClient,
      datagramsToClient: item.datagramsToClient,
    }),
    ...(connectTimeMs !== undefined && { connectTimeMs }),
    startTime: item.startTime,
    durationMs: Date.now() - item.startTime,
  };
}

/**
 * The configurable access log (`accessLog` setting): a format string or a field list, a line
 * when the upstream connects, and a periodic line for long-lived connections and sessions.
 */
function observeWithSettings(
  logs: ProxyLogs,
  listener: ListenerConfig,
  proxy: TcpProxy | UdpProxy,
  settings: AccessLogSettings,
): void {
  const { access, ops } = logs;
  const base = { listener: listener.name, protocol: listener.protocol };
  const writer = accessWriter(access, settings);
  const connectTimes = new Map<number, number>();
  const live = (): readonly (TcpConnectionInfo | UdpSessionInfo)[] =>
    'connections' in proxy ? proxy.connections() : proxy.sessions();
  const interval = settings.flushInterval ?? 0;
  const timer =
    interval === 0
      ? undefined
      : setInterval(() => {
          const now = Date.now();
          for (const item of live()) {
            if (now - item.startTime < interval) continue;
            writer.write(
              'periodic',
              listener.protocol === 'tcp' ? 'connection active' : 'session active',
              liveRecord(base, item, connectTimes.get(item.id)),
            );
          }
        }, interval);
  timer?.unref();
  if ('connections' in proxy) {
    proxy.on('upstreamConnect', (connection) => {
      const connectTimeMs =
        Math.round((performance.now() - connection.attemptStartedAt) * 1000) / 1000;
      connectTimes.set(connection.id, connectTimeMs);
      if (settings.flushOnConnected === true)
        writer.write(
          'connected',
          'upstream connected',
          liveRecord(base, connection, connectTimeMs),
        );
    });
    proxy.on('connectionClose', (summary) => {
      const connectTimeMs = connectTimes.get(summary.id);
      connectTimes.delete(summary.id);
      writer.write('end', 'connection closed', {
        ...base,
        ...summary,
        ...(connectTimeMs !== undefined && { connectTimeMs }),
      });
    });
    logFailures(ops, base, proxy);
    proxy.on('close', () => {
      clearInterval(timer);
    });
    return;
  }
  proxy.on('sessionClose', (summary) => {
    writer.write('end', 'session closed', { ...base, ...summary });
  });
  logFailures(ops, base, proxy);
  proxy.on('close', () => {
    clearInterval(timer);
  });
}
