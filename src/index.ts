/**
 * l4proxy: an embeddable Layer 4 (TCP and UDP) proxy for Node.js, non-transparent by design.
 *
 * @packageDocumentation
 */

// Proxies: TCP and UDP, their options, stats, events and close reasons.
export type { ProxyMode } from './mode.js';
export { TcpProxy } from './tcp/TcpProxy.js';
export type { ListenOptions, CloseOptions } from './tcp/TcpProxy.js';
export type { TcpProxyOptions } from './tcp/TcpProxyOptions.js';
export type { TcpProxyStats, TcpUpstreamStats } from './tcp/TcpProxyStats.js';
export type {
  TcpConnectionInfo,
  TcpConnectionSummary,
  TcpRejection,
  TcpProxyEvents,
} from './tcp/events.js';
export { CloseReason, RejectReason } from './tcp/closeReasons.js';
export type {
  AcceptProxyProtocolOptions,
  ProxyProtocolOption,
  SniOptions,
} from './tcp/identityOptions.js';
export type { PerClientLimits } from './net/ClientLimiter.js';
export { UdpProxy } from './udp/UdpProxy.js';
export type { BindOptions } from './udp/UdpProxy.js';
export type { UdpProxyOptions, UdpPerClientLimits } from './udp/UdpProxyOptions.js';
export type { UdpProxyStats, UdpUpstreamStats } from './udp/UdpProxyStats.js';
export type { UdpQuicOptions, QuicLbOptions } from './quic/quicOptions.js';
export type { UdpQuicStats } from './quic/QuicStats.js';
export type { UdpSessionInfo, UdpSessionSummary, UdpDrop, UdpProxyEvents } from './udp/events.js';
export { SessionCloseReason, DropReason } from './udp/closeReasons.js';
export { runWorkers, workerCount } from './cluster/runWorkers.js';
export type { RunWorkersOptions, WorkerContext, WorkerGroup } from './cluster/runWorkers.js';
export type { RoundRobinRefusal, RoundRobinStats } from './cluster/roundRobinGuard.js';
export { reusePortSupported } from './net/reusePort.js';

// Upstreams and sources: the upstream shape, live state, discovery and health.
export type { Upstream } from './upstream/Upstream.js';
export type { CheckFailure, UpstreamCandidate } from './upstream/UpstreamState.js';
export type { UpstreamSink, UpstreamSource } from './upstream/UpstreamSource.js';
export { DnsSource } from './upstream/DnsSource.js';
export type { DnsAddressType, DnsSourceOptions, DnsSourceStats } from './upstream/DnsSource.js';
export type {
  HealthBytes,
  HealthCheckOptions,
  HealthExpect,
  OutlierDetectionOptions,
  TcpHealthCheck,
  UdpHealthCheck,
} from './upstream/healthOptions.js';
export type { HttpHealthCheck } from './upstream/httpCheckOptions.js';
export type { UpstreamHealthChange } from './upstream/UpstreamManager.js';
export type { UpstreamOptions } from './upstream/UpstreamOptions.js';
export type { UpstreamEvents } from './upstream/UpstreamEvents.js';

// Selectors: the hook's types, the shipped selectors and the helper to compose them.
export type {
  SelectionContext,
  SelectionResult,
  UpstreamSelector,
} from './select/SelectionContext.js';
export { roundRobin } from './select/roundRobin.js';
export { random } from './select/random.js';
export type { RandomOptions } from './select/random.js';
export { leastConnections } from './select/leastConnections.js';
export type { LeastConnectionsOptions } from './select/leastConnections.js';
export { consistentHash } from './select/consistentHash.js';
export type { ConsistentHashOptions } from './select/consistentHash.js';
export { failover } from './select/failover.js';
export type { FailoverOptions } from './select/failover.js';
export { withCandidates } from './select/withCandidates.js';

// Codecs: PROXY protocol v1/v2 and the TLS ClientHello peek.
export type {
  ProxyCommand,
  ProxyProtocolName,
  ProxyInetEndpoint,
  ProxyUnixEndpoint,
  ProxyTlv,
  ProxyInetHeader,
  ProxyUnixHeader,
  ProxyUnknownHeader,
  ProxyHeader,
  ProxyHeaderResult,
} from './protocol/ProxyHeader.js';
export {
  PROXY_V2_SIGNATURE,
  PROXY_V1_MAX_LENGTH,
  PROXY_V2_MAX_LENGTH,
} from './protocol/ProxyHeader.js';
export {
  ProxyHeaderParser,
  decodeProxyHeader,
  DEFAULT_PROXY_HEADER_MAX_LENGTH,
} from './protocol/ProxyHeaderParser.js';
export type { ProxyHeaderParserOptions } from './protocol/ProxyHeaderParser.js';
export { encodeProxyHeader } from './protocol/encodeProxyHeader.js';
export type { EncodeProxyHeaderOptions } from './protocol/encodeProxyHeader.js';
export { ProxyTlvType, ProxySslSubtype, ProxySslClient } from './protocol/proxyTlv.js';
export { proxyTlvs, readProxyTlvs } from './protocol/proxyTlvFields.js';
export type { ProxyTlvFields, ProxySslFields } from './protocol/proxyTlvFields.js';
export { crc32c } from './protocol/crc32c.js';
export { ClientHelloParser, DEFAULT_CLIENT_HELLO_MAX_BYTES } from './protocol/ClientHelloParser.js';
export type { ClientHelloParserOptions, ClientHelloResult } from './protocol/ClientHelloParser.js';
export type { ClientHello } from './protocol/clientHello.js';
export {
  QuicInitialParser,
  parseQuicInitial,
  DEFAULT_QUIC_INITIAL_MAX_BYTES,
} from './protocol/QuicInitialParser.js';
export type {
  QuicInitial,
  QuicInitialParserOptions,
  QuicInitialResult,
} from './protocol/QuicInitialParser.js';
export { QUIC_V1, QUIC_V2 } from './protocol/quicKeys.js';

// Errors: every error the library reports is an L4Error with a stable code (docs/errors.md).
export {
  ErrorCode,
  L4Error,
  InvalidOptionError,
  ModeUnsupportedError,
  NoUpstreamError,
  ConnectTimeoutError,
  ConnectFailedError,
  SelectorError,
  ProxyClosedError,
  ListenError,
  ProxyProtocolError,
  TlsClientHelloError,
  HealthCheckError,
  UpstreamSourceError,
  ResourceExhaustedError,
  ParserFinishedError,
  FilterError,
  AdmissionError,
  QuicInitialError,
} from './errors.js';
export type {
  ProxyProtocolErrorReason,
  TlsClientHelloErrorReason,
  QuicInitialErrorReason,
} from './errors.js';

// Diagnostics and metrics: node:diagnostics_channel channels and their messages.
export { DiagnosticsChannel } from './diagnostics.js';
export type {
  TcpConnectionMessage,
  TcpConnectionCloseMessage,
  TcpRejectedMessage,
  UdpSessionMessage,
  UdpSessionCloseMessage,
  UdpDroppedMessage,
} from './diagnostics.js';

// TLS origination and termination.
export { TlsHandshakeError } from './errors.js';
export type { TlsFailureCode } from './errors.js';
export type { UpstreamTlsOptions, UpstreamTlsSetting } from './tls/UpstreamTlsOptions.js';
export type { StartTlsProtocol } from './tls/startTls.js';
export type {
  ClientCertificateMode,
  TerminateTlsOptions,
  TlsCertificate,
  SniCertificate,
  SniCallbackResult,
} from './tls/TerminateTlsOptions.js';
export type { DownstreamTlsInfo, TlsPeerCertificate } from './tls/DownstreamTls.js';
export type { TlsVersion, PemInput } from './tls/pem.js';
export type {
  SubjectAltNameMatcher,
  SubjectAltNameType,
  CertificatePins,
} from './tls/certificateIdentity.js';
export type { TlsStats } from './tls/tlsStats.js';
export type { TlsCertificateInfo } from './tls/certificateInfo.js';
export { sslTlvFields } from './tls/sslTlv.js';

// Connection policy: caps and queue, timeouts, keepalive, source address, bandwidth.
export type {
  BandwidthOptions,
  ConnectBackoffOptions,
  KeepAliveOptions,
  QueueOptions,
  SharedBandwidthOptions,
  TcpPolicyOptions,
} from './tcp/policyOptions.js';
export type { SlowStartOptions } from './upstream/SlowStart.js';

// Programmable data path: preread inspectors, the admission hook, data filters.
export { tlsClientHello } from './preread/tlsClientHello.js';
export type { TlsClientHelloOptions } from './preread/tlsClientHello.js';
export { http1 } from './preread/http1.js';
export type { Http1Options } from './preread/http1.js';
export { postgresStartup } from './preread/postgresStartup.js';
export type { PostgresStartupOptions } from './preread/postgresStartup.js';
export { firstLine } from './preread/firstLine.js';
export type { FirstLineOptions } from './preread/firstLine.js';
export type {
  PrereadContext,
  PrereadInspector,
  PrereadMetadata,
  PrereadResults,
  PrereadValue,
  PrereadVerdict,
} from './preread/types.js';
export type { PrereadOptions } from './preread/prereadOptions.js';
export type { AdmissionContext, AdmissionHook, AdmissionVerdict } from './filter/admission.js';
export type { DataFilter, DataFilterFactory, FilterResult } from './filter/dataFilter.js';
export type {
  DatagramResult,
  UdpSessionFilter,
  UdpSessionFilterFactory,
} from './filter/sessionFilter.js';

// Tunneling over HTTP: CONNECT (HTTP/1.1, HTTP/2) and CONNECT-UDP upstreams, the terminating server.
export { TunnelRefusedError } from './errors.js';
export type { HttpTunnel, TunnelPeer, TunnelTlsOptions } from './transport/tunnelOptions.js';
export type { TunnelStats } from './transport/TunnelStats.js';
export { TunnelServer } from './tunnel/TunnelServer.js';
export type {
  TunnelConnectionRefusal,
  TunnelListenOptions,
  TunnelRequest,
  TunnelServerEvents,
  TunnelServerOptions,
  TunnelServerStats,
  TunnelSummary,
  TunnelTarget,
} from './tunnel/TunnelServer.js';
export type { UdpRelayDrop } from './tunnel/udpRelay.js';
export type { RelayEnd } from './tunnel/relayStreams.js';
export type {
  TunnelAdmissionContext,
  TunnelAdmissionHook,
  TunnelAdmissionVerdict,
} from './tunnel/tunnelAdmission.js';
export type {
  TunnelRefusal,
  TunnelRouteMode,
  TunnelSelectionContext,
} from './tunnel/TunnelDial.js';
export type { TunnelSelector } from './tunnel/tunnelServerOptions.js';

// Operations: admin server, runtime control, latency histograms.
export { AdminServer, createAdminServer } from './admin/AdminServer.js';
export type {
  AdminControlEntry,
  AdminListenOptions,
  AdminServerEvents,
} from './admin/AdminServer.js';
export type {
  AdminCertificateListener,
  AdminReadiness,
  AdminServerOptions,
} from './admin/adminOptions.js';
export type { AdminListener } from './admin/AdminListener.js';
export type { UpstreamReport } from './admin/upstreamReport.js';
export type { AdminMode, AdminOverride, OverrideOrigin } from './upstream/adminOverride.js';
export type { RestoredOverrides, SavedOverride } from './upstream/savedOverride.js';
export { LatencyRecorder, latencyFamilies } from './metrics/latency.js';
export type { LatencySnapshot } from './metrics/latency.js';
export type { HistogramSnapshot } from './metrics/histogram.js';
// Several proxies in one scrape: their families merged by renderFamilies (metrics() strings
// concatenated would repeat HELP and TYPE, and Prometheus drops such a scrape whole).
export {
  PROMETHEUS_CONTENT_TYPE,
  renderFamilies,
  tcpFamilies,
  udpFamilies,
} from './metrics/prometheus.js';
export { tunnelServerFamilies } from './metrics/tunnelMetrics.js';
export type { MetricFamily, MetricLabels, MetricSample } from './metrics/prometheus.js';
