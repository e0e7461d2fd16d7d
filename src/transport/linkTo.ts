import type { UpstreamState } from '../upstream/UpstreamState.js';
import type { LinkOwner } from '../udp/UpstreamLink.js';
import { UpstreamLink } from '../udp/UpstreamLink.js';
import { ConnectUdpLink } from './ConnectUdpLink.js';

/** A session's link to `state`: its own dgram socket, or a CONNECT-UDP stream for a tunnel upstream. */
export function linkTo(owner: LinkOwner, state: UpstreamState): UpstreamLink {
  const tunnel = state.upstream.tunnel;
  return tunnel === undefined
    ? new UpstreamLink(owner, state)
    : new ConnectUdpLink(owner, state, tunnel);
}
