/*
 * Load generator and echo backends for the l4proxy benchmark (bench/README.md).
 *
 * Written in C so that, on a 2-core machine, the client and the backend cost far less CPU per
 * operation than any proxy under test: what is measured is the proxy, not the generator.
 * Every client targets 127.0.0.1 only (the sweep's: 127.0.0.1 or ::1). Clients print one JSON line on
 * stdout; echo servers print "ready <port>" and run until SIGTERM.
 *
 *   loadgen echo-tcp <port>
 *   loadgen echo-udp <port>
 *   loadgen tcp-rr <port> <connections> <seconds> <size>
 *   loadgen tcp-connect <port> <concurrency> <seconds> <size>
 *   loadgen tcp-latency <port> <seconds> <size>
 *   loadgen udp-rr <port> <sockets> <window> <seconds> <size>
 *   loadgen udp-sessions <port> <concurrency> <seconds> <size>
 *   loadgen tcp-idle <port> <count>        (holds the connections until stdin closes)
 *
 * The parameter sweep's modes (bench/sweep.ts), on IPv4 or IPv6 loopback: every client runs
 * <warm> seconds unmeasured, prints "go" on stdout, runs <secs> measured seconds and prints one
 * JSON line {"ops":N,"errors":E}. The backend prints "ready <tcp> <udp>" and takes commands on
 * stdin, one a line: "tcp echo" | "tcp close <n>" (close after echoing n bytes), "udp echo" |
 * "udp sink", "count" (prints "count <udp datagrams received>"); it ends when stdin closes.
 *
 *   loadgen sweep-backend <4|6>
 *   loadgen sweep-tcp <4|6> <port> <conc> <warm> <secs> <size> <chunk> <keepalive> <close> <nodelay>
 *       close: client | server | rst; keepalive 1 = round trips of <size> on one connection
 *   loadgen sweep-idle <4|6> <port> <conns> <warm> <secs> <interval ms>
 *   loadgen sweep-udp <4|6> <port> <sockets> <window> <warm> <secs> <size> <oneway rate/s, 0 = rr>
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Seconds of load before the measured window: long enough for V8's optimizing compiler to settle
 * in a fresh Node proxy, so runs compare steady states. LOADGEN_WARMUP_SECONDS in the environment
 * overrides it (the harness's smoke runs use 0); bench/lib/scenarios.ts mirrors it. */
static double warmup_seconds = 2.0;

#define MAX_EVENTS 256
#define MAX_SIZE 65536

static char buf[MAX_SIZE];
static char payload[MAX_SIZE];
/* The loopback address family: 4, or 6 for a sweep mode given 6. */
static int family = 4;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *what) {
  fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
  exit(2);
}

static void nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static int domain(void) { return family == 6 ? AF_INET6 : AF_INET; }

/* Fills s with the loopback address of the family and port; returns its length. */
static socklen_t loopback(struct sockaddr_storage *s, int port) {
  memset(s, 0, sizeof *s);
  if (family == 6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)s;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    a->sin6_addr = in6addr_loopback;
    return sizeof *a;
  }
  struct sockaddr_in *a = (struct sockaddr_in *)s;
  a->sin_family = AF_INET;
  a->sin_port = htons((uint16_t)port);
  a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return sizeof *a;
}

static int bound_port(int fd) {
  struct sockaddr_storage s;
  socklen_t len = sizeof s;
  getsockname(fd, (struct sockaddr *)&s, &len);
  return ntohs(family == 6 ? ((struct sockaddr_in6 *)&s)->sin6_port
                           : ((struct sockaddr_in *)&s)->sin_port);
}

static void no_delay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Writes all of len bytes, waiting for POLLOUT when the socket is full. */
static int write_all(int fd, const char *data, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = write(fd, data + done, len - done);
    if (n > 0) {
      done += (size_t)n;
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      struct pollfd p = {fd, POLLOUT, 0};
      poll(&p, 1, 1000);
    } else {
      return -1;
    }
  }
  return 0;
}

/* True at the first call at or after `at`, and only then: the measured window opens (the caller
 * zeroes its counts). */
static int opens(double t, double at, int *open) {
  if (*open || t < at) return 0;
  *open = 1;
  return 1;
}

static void result(const char *name, long ops, double seconds, long errors, double cpu,
                   const char *extra) {
  printf("{\"scenario\":\"%s\",\"ops\":%ld,\"seconds\":%.6f,\"rate\":%.3f,\"errors\":%ld,"
         "\"cpu\":%.6f%s}\n",
         name, ops, seconds, seconds > 0 ? (double)ops / seconds : 0.0, errors, cpu,
         extra ? extra : "");
  fflush(stdout);
}

/* A client's measured window: it opens warmup_seconds after the client starts, lasts `seconds`;
 * the process's CPU time is counted from its opening. */
struct measure {
  double warm, end, cpu0;
  int open;
};

static struct measure measure_from(double start, double seconds) {
  struct measure m = {start + warmup_seconds, 0, 0, 0};
  m.end = m.warm + seconds;
  return m;
}

/* True at the first t at or after the opening, and only then (the caller zeroes its counts). */
static int measure_opens(struct measure *m, double t) {
  if (!opens(t, m->warm, &m->open)) return 0;
  m->cpu0 = cpu_seconds();
  return 1;
}

/* The client's JSON line for the window, which ends now. */
static void measure_result(const struct measure *m, const char *name, long ops, long errors) {
  double elapsed = now() - m->warm;
  result(name, ops, elapsed, errors, cpu_seconds() - m->cpu0, NULL);
}

/* ---- echo servers ---------------------------------------------------------------------- */

static volatile sig_atomic_t stopping = 0;
static void on_term(int sig) {
  (void)sig;
  stopping = 1;
}

/* A socket bound to the loopback port (0: any), listening if a stream socket. */
static int bound_socket(int type, int port) {
  int fd = socket(domain(), type, 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_storage a;
  socklen_t len = loopback(&a, port);
  if (bind(fd, (struct sockaddr *)&a, len) < 0) die("bind");
  if (type == SOCK_STREAM && listen(fd, 4096) < 0) die("listen");
  return fd;
}

static int listen_socket(int type, int port) {
  int fd = bound_socket(type, port);
  printf("ready %d\n", bound_port(fd));
  fflush(stdout);
  return fd;
}

static int echo_tcp(int port) {
  int lfd = listen_socket(SOCK_STREAM, port);
  nonblocking(lfd);
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  struct epoll_event events[MAX_EVENTS];
  while (!stopping) {
    int n = epoll_wait(ep, events, MAX_EVENTS, 200);
    for (int i = 0; i < n; i++) {
      int fd = events[i].data.fd;
      if (fd == lfd) {
        for (;;) {
          int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
          if (c < 0) break;
          no_delay(c);
          struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
        }
        continue;
      }
      ssize_t r = read(fd, buf, sizeof buf);
      if (r > 0) {
        if (write_all(fd, buf, (size_t)r) < 0) close(fd);
      } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
        close(fd);
      }
    }
  }
  return 0;
}

static int echo_udp(int port) {
  int fd = listen_socket(SOCK_DGRAM, port);
  int size = 4 * 1024 * 1024;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  enum { BATCH = 64 };
  static char bufs[BATCH][2048];
  struct mmsghdr msgs[BATCH];
  struct iovec iov[BATCH];
  struct sockaddr_in from[BATCH];
  struct timespec timeout = {0, 200 * 1000 * 1000};
  struct timeval tv = {0, 200 * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  while (!stopping) {
    for (int i = 0; i < BATCH; i++) {
      iov[i].iov_base = bufs[i];
      iov[i].iov_len = sizeof bufs[i];
      memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_name = &from[i];
      msgs[i].msg_hdr.msg_namelen = sizeof from[i];
    }
    int n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, &timeout);
    if (n <= 0) continue;
    for (int i = 0; i < n; i++) iov[i].iov_len = msgs[i].msg_len;
    sendmmsg(fd, msgs, (unsigned)n, 0);
  }
  return 0;
}

/* ---- TCP clients ----------------------------------------------------------------------- */

static int tcp_connect_blocking(int port) {
  int fd = socket(domain(), SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct sockaddr_storage a;
  socklen_t len = loopback(&a, port);
  if (connect(fd, (struct sockaddr *)&a, len) < 0) {
    close(fd);
    return -1;
  }
  no_delay(fd);
  return fd;
}

/* Reads exactly len bytes (blocking socket). */
static int read_all(int fd, size_t len) {
  size_t got = 0;
  while (got < len) {
    ssize_t r = read(fd, buf, len - got);
    if (r <= 0) {
      if (r < 0 && errno == EINTR) continue;
      return -1;
    }
    got += (size_t)r;
  }
  return 0;
}

struct conn {
  int fd;
  size_t got;
  int connecting;
};

static int tcp_rr(int port, int conns, double seconds, size_t size) {
  int ep = epoll_create1(0);
  struct conn *cs = calloc((size_t)conns, sizeof *cs);
  for (int i = 0; i < conns; i++) {
    cs[i].fd = tcp_connect_blocking(port);
    if (cs[i].fd < 0) die("connect");
    nonblocking(cs[i].fd);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
  }
  struct measure m = measure_from(now(), seconds);
  long ops = 0, errors = 0;
  for (int i = 0; i < conns; i++) write_all(cs[i].fd, payload, size);
  struct epoll_event events[MAX_EVENTS];
  for (;;) {
    double t = now();
    if (measure_opens(&m, t)) ops = 0;
    if (t >= m.end) break;
    int n = epoll_wait(ep, events, MAX_EVENTS, 50);
    for (int i = 0; i < n; i++) {
      struct conn *c = &cs[events[i].data.u32];
      ssize_t r = read(c->fd, buf, sizeof buf);
      if (r <= 0) {
        if (r < 0 && errno == EAGAIN) continue;
        errors++;
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        continue;
      }
      c->got += (size_t)r;
      if (c->got >= size) {
        c->got -= size;
        ops++;
        if (write_all(c->fd, payload, size) < 0) errors++;
      }
    }
  }
  measure_result(&m, "tcp-rr", ops, errors);
  return 0;
}

static int tcp_connect_start(int ep, struct conn *c, uint32_t slot, int port) {
  c->fd = socket(domain(), SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (c->fd < 0) return -1;
  no_delay(c->fd);
  c->got = 0;
  c->connecting = 1;
  struct sockaddr_storage a;
  socklen_t len = loopback(&a, port);
  int r = connect(c->fd, (struct sockaddr *)&a, len);
  if (r < 0 && errno != EINPROGRESS) {
    close(c->fd);
    c->fd = -1;
    return -1;
  }
  struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = slot};
  epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
  return 0;
}

static int tcp_connect(int port, int concurrency, double seconds, size_t size) {
  int ep = epoll_create1(0);
  struct conn *cs = calloc((size_t)concurrency, sizeof *cs);
  long ops = 0, errors = 0;
  for (int i = 0; i < concurrency; i++)
    if (tcp_connect_start(ep, &cs[i], (uint32_t)i, port) < 0) errors++;
  struct measure m = measure_from(now(), seconds);
  struct epoll_event events[MAX_EVENTS];
  for (;;) {
    double t = now();
    if (measure_opens(&m, t)) ops = errors = 0;
    if (t >= m.end) break;
    int n = epoll_wait(ep, events, MAX_EVENTS, 50);
    for (int i = 0; i < n; i++) {
      uint32_t slot = events[i].data.u32;
      struct conn *c = &cs[slot];
      int failed = 0, done = 0;
      if (events[i].events & (EPOLLERR | EPOLLHUP) && c->connecting) {
        failed = 1;
      } else if (c->connecting && (events[i].events & EPOLLOUT)) {
        c->connecting = 0;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = slot};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        if (write(c->fd, payload, size) != (ssize_t)size) failed = 1;
      } else if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        ssize_t r = read(c->fd, buf, sizeof buf);
        if (r > 0) {
          c->got += (size_t)r;
          if (c->got >= size) done = 1;
        } else if (!(r < 0 && errno == EAGAIN)) {
          failed = 1;
        }
      }
      if (failed || done) {
        if (done) ops++;
        else errors++;
        close(c->fd);
        if (tcp_connect_start(ep, c, slot, port) < 0) errors++;
      }
    }
    /* Slots whose socket() or connect() failed outright are retried here. */
    for (int i = 0; i < concurrency; i++)
      if (cs[i].fd < 0 && tcp_connect_start(ep, &cs[i], (uint32_t)i, port) < 0) errors++;
  }
  measure_result(&m, "tcp-connect", ops, errors);
  return 0;
}

static int compare_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int tcp_latency(int port, double seconds, size_t size) {
  int fd = tcp_connect_blocking(port);
  if (fd < 0) die("connect");
  size_t cap = 4 * 1000 * 1000, count = 0;
  double *samples = malloc(cap * sizeof *samples);
  struct measure m = measure_from(now(), seconds);
  long errors = 0;
  for (;;) {
    double t0 = now();
    if (measure_opens(&m, t0)) count = 0;
    if (t0 >= m.end) break;
    if (write_all(fd, payload, size) < 0 || read_all(fd, size) < 0) {
      errors++;
      break;
    }
    if (count < cap) samples[count++] = (now() - t0) * 1e6;
  }
  double elapsed = now() - m.warm;
  qsort(samples, count, sizeof *samples, compare_double);
  char extra[128];
  double p50 = count ? samples[count / 2] : 0, p99 = count ? samples[(count * 99) / 100] : 0;
  snprintf(extra, sizeof extra, ",\"p50_us\":%.3f,\"p99_us\":%.3f", p50, p99);
  result("tcp-latency", (long)count, elapsed, errors, cpu_seconds() - m.cpu0, extra);
  return 0;
}

static int tcp_idle(int port, int count) {
  int *fds = malloc((size_t)count * sizeof *fds);
  int opened = 0;
  for (int i = 0; i < count; i++) {
    int fd = tcp_connect_blocking(port);
    if (fd < 0) break;
    if (write_all(fd, payload, 1) < 0 || read_all(fd, 1) < 0) {
      close(fd);
      break;
    }
    fds[opened++] = fd;
  }
  printf("ready %d\n", opened);
  fflush(stdout);
  while (read(0, buf, sizeof buf) > 0) {
  }
  for (int i = 0; i < opened; i++) close(fds[i]);
  return 0;
}

/* ---- UDP clients ----------------------------------------------------------------------- */

static int udp_socket(int port) {
  int fd = socket(domain(), SOCK_DGRAM | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  struct sockaddr_storage a;
  socklen_t len = loopback(&a, port);
  if (connect(fd, (struct sockaddr *)&a, len) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

struct udp_slot {
  int fd;
  int inflight;
  double last;
  /* udp-rr: datagrams sent and answered (or given up) so far, and `sent` at the last check. */
  long sent, answered, mark;
};

static int udp_rr(int port, int sockets, int window, double seconds, size_t size) {
  int ep = epoll_create1(0);
  struct udp_slot *ss = calloc((size_t)sockets, sizeof *ss);
  double start = now();
  for (int i = 0; i < sockets; i++) {
    ss[i].fd = udp_socket(port);
    if (ss[i].fd < 0) die("udp socket");
    int rcv = 1024 * 1024;
    setsockopt(ss[i].fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, ss[i].fd, &ev);
    for (int k = 0; k < window; k++)
      if (send(ss[i].fd, payload, size, 0) == (ssize_t)size) ss[i].sent++;
  }
  struct measure m = measure_from(start, seconds);
  double next_check = start + 0.05;
  long ops = 0, lost = 0;
  struct epoll_event events[MAX_EVENTS];
  for (;;) {
    double t = now();
    if (measure_opens(&m, t)) ops = lost = 0;
    if (t >= m.end) break;
    int n = epoll_wait(ep, events, MAX_EVENTS, 10);
    for (int i = 0; i < n; i++) {
      struct udp_slot *s = &ss[events[i].data.u32];
      for (;;) {
        ssize_t r = recv(s->fd, buf, sizeof buf, 0);
        if (r < 0) break;
        ops++;
        s->answered++;
        if (send(s->fd, payload, size, 0) == (ssize_t)size) s->sent++;
      }
    }
    t = now();
    if (t < next_check) continue;
    next_check = t + 0.05;
    /*
     * A datagram sent before the previous check (50 ms or more ago; a reply takes well under a
     * millisecond here) and still unanswered was dropped somewhere (a receive buffer overflowed
     * in a burst or a pause): counted as lost and replaced, so that a loss does not shrink the
     * window for the rest of the run, which made this scenario's rate depend on early losses.
     */
    for (int i = 0; i < sockets; i++) {
      struct udp_slot *s = &ss[i];
      long overdue = s->mark - s->answered;
      if (overdue > 0) {
        lost += overdue;
        s->answered += overdue;
      }
      for (long k = s->sent - s->answered; k < window; k++)
        if (send(s->fd, payload, size, 0) == (ssize_t)size) s->sent++;
      s->mark = s->sent;
    }
  }
  measure_result(&m, "udp-rr", ops, lost);
  return 0;
}

static int udp_sessions(int port, int concurrency, double seconds, size_t size) {
  int ep = epoll_create1(0);
  struct udp_slot *ss = calloc((size_t)concurrency, sizeof *ss);
  long ops = 0, lost = 0;
  double start = now();
  for (int i = 0; i < concurrency; i++) ss[i].fd = -1;
  struct measure m = measure_from(start, seconds);
  struct epoll_event events[MAX_EVENTS];
  for (;;) {
    double t = now();
    if (measure_opens(&m, t)) ops = lost = 0;
    if (t >= m.end) break;
    /* Open a fresh socket (a new source port: a new session) for every empty or stale slot. */
    for (int i = 0; i < concurrency; i++) {
      struct udp_slot *s = &ss[i];
      if (s->fd >= 0 && t - s->last < 0.2) continue;
      if (s->fd >= 0) {
        lost++;
        close(s->fd);
      }
      s->fd = udp_socket(port);
      if (s->fd < 0) continue;
      struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
      epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
      send(s->fd, payload, size, 0);
      s->last = t;
    }
    int n = epoll_wait(ep, events, MAX_EVENTS, 10);
    for (int i = 0; i < n; i++) {
      struct udp_slot *s = &ss[events[i].data.u32];
      if (recv(s->fd, buf, sizeof buf, 0) < 0) continue;
      ops++;
      close(s->fd);
      s->fd = -1;
    }
  }
  measure_result(&m, "udp-sessions", ops, lost);
  return 0;
}

/* ---- the parameter sweep (bench/sweep.ts) ---------------------------------------------- */

/* The sweep's cells hold up to 2 000 connections at once: more events per wait. */
#define SWEEP_EVENTS 512
#define MAX_FD 65536

/* A non-blocking socket of the family; dies on failure. */
static int sock(int type) {
  int fd = socket(domain(), type | SOCK_NONBLOCK, 0);
  if (fd < 0) die("socket");
  return fd;
}

static void add(int ep, int fd, uint32_t events) {
  struct epoll_event e = {.events = events, .data.fd = fd};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0) die("epoll_ctl");
}

static void mod(int ep, int fd, uint32_t events) {
  struct epoll_event e = {.events = events, .data.fd = fd};
  epoll_ctl(ep, EPOLL_CTL_MOD, fd, &e);
}

/* Prints "go": the warm-up is over, the sweep starts its meters. */
static void say_go(void) {
  printf("go\n");
  fflush(stdout);
}

static void sweep_result(long ops, long errors) {
  printf("{\"ops\":%ld,\"errors\":%ld}\n", ops, errors);
  fflush(stdout);
}

static long echoed[MAX_FD];

/* Runs a command line of the backend's stdin (see the comment at the top). */
static void backend_command(const char *line, long *close_after, int *udp_echo, long udp_rx) {
  if (!strncmp(line, "tcp echo", 8)) *close_after = 0;
  else if (!strncmp(line, "tcp close ", 10)) *close_after = atol(line + 10);
  else if (!strcmp(line, "udp echo")) *udp_echo = 1;
  else if (!strcmp(line, "udp sink")) *udp_echo = 0;
  else if (!strcmp(line, "count")) {
    printf("count %ld\n", udp_rx);
    fflush(stdout);
  }
}

static int sweep_backend(void) {
  int tcp = bound_socket(SOCK_STREAM, 0), udp = bound_socket(SOCK_DGRAM, 0), one = 1;
  nonblocking(tcp);
  nonblocking(udp);
  int big = 4 << 20;
  setsockopt(udp, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  int ep = epoll_create1(0);
  add(ep, tcp, EPOLLIN);
  add(ep, udp, EPOLLIN);
  nonblocking(0);
  add(ep, 0, EPOLLIN);
  printf("ready %d %d\n", bound_port(tcp), bound_port(udp));
  fflush(stdout);
  long close_after = 0, udp_rx = 0;
  int udp_echo = 1;
  char line[256];
  size_t line_len = 0;
  struct epoll_event events[SWEEP_EVENTS];
  for (;;) {
    int n = epoll_wait(ep, events, SWEEP_EVENTS, -1);
    for (int i = 0; i < n; i++) {
      int fd = events[i].data.fd;
      if (fd == 0) {
        ssize_t r = read(0, line + line_len, sizeof line - 1 - line_len);
        if (r == 0) return 0;
        if (r < 0) continue;
        line_len += (size_t)r;
        char *nl;
        while ((nl = memchr(line, '\n', line_len)) != NULL) {
          *nl = 0;
          backend_command(line, &close_after, &udp_echo, udp_rx);
          size_t used = (size_t)(nl - line) + 1;
          memmove(line, nl + 1, line_len - used);
          line_len -= used;
        }
      } else if (fd == tcp) {
        int c;
        while ((c = accept4(tcp, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          if (c >= MAX_FD) {
            close(c);
            continue;
          }
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          echoed[c] = 0;
          add(ep, c, EPOLLIN);
        }
      } else if (fd == udp) {
        struct sockaddr_storage from;
        for (;;) {
          socklen_t flen = sizeof from;
          ssize_t r = recvfrom(udp, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
          if (r < 0) break;
          udp_rx++;
          if (udp_echo) sendto(udp, buf, (size_t)r, 0, (struct sockaddr *)&from, flen);
        }
      } else {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r > 0) {
          if (write_all(fd, buf, (size_t)r) < 0) {
            close(fd);
            continue;
          }
          echoed[fd] += r;
          if (close_after > 0 && echoed[fd] >= close_after) close(fd);
        } else if (r == 0 || errno != EAGAIN) {
          close(fd);
        }
      }
    }
  }
}

struct sweep_conn {
  long sent, received;
  int waiting_eof;
};
static struct sweep_conn sweep_conns[MAX_FD];
static long size_, chunk_;
static int keepalive_, nodelay_, close_mode_; /* 0 client, 1 server, 2 rst */
static struct sockaddr_storage target;
static socklen_t target_len;

static int open_conn(int ep) {
  int fd = sock(SOCK_STREAM);
  if (nodelay_) no_delay(fd);
  if (connect(fd, (struct sockaddr *)&target, target_len) < 0 && errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  memset(&sweep_conns[fd], 0, sizeof sweep_conns[fd]);
  add(ep, fd, EPOLLIN | EPOLLOUT);
  return fd;
}

static void finish_conn(int fd) {
  if (close_mode_ == 2) {
    struct linger l = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  }
  close(fd);
}

/* Writes what the connection still owes, in chunk_-byte write() calls; EPOLLOUT while owing. */
static int pump(int ep, int fd) {
  struct sweep_conn *c = &sweep_conns[fd];
  while (c->sent < size_) {
    long len = size_ - c->sent < chunk_ ? size_ - c->sent : chunk_;
    ssize_t n = write(fd, payload, (size_t)len);
    if (n < 0) {
      if (errno == EAGAIN) break;
      return -1;
    }
    c->sent += n;
  }
  mod(ep, fd, c->sent < size_ ? EPOLLIN | EPOLLOUT : EPOLLIN);
  return 0;
}

static int sweep_tcp(int port, int conc, double warm, double secs) {
  target_len = loopback(&target, port);
  int ep = epoll_create1(0);
  for (int i = 0; i < conc; i++) open_conn(ep);
  struct epoll_event events[SWEEP_EVENTS];
  double start = now(), go = start + warm, end = go + secs;
  long ops = 0, errors = 0;
  int measuring = 0;
  for (;;) {
    double t = now();
    if (opens(t, go, &measuring)) {
      ops = errors = 0;
      say_go();
    }
    if (t >= end) break;
    int n = epoll_wait(ep, events, SWEEP_EVENTS, 5);
    for (int i = 0; i < n; i++) {
      int fd = events[i].data.fd;
      struct sweep_conn *c = &sweep_conns[fd];
      int failed = (events[i].events & EPOLLERR) != 0;
      if (!failed && (events[i].events & EPOLLOUT) && pump(ep, fd) < 0) failed = 1;
      while (!failed && (events[i].events & (EPOLLIN | EPOLLHUP))) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EAGAIN) break;
        if (r <= 0) {
          if (r == 0 && c->waiting_eof) {
            close(fd);
            ops++;
            open_conn(ep);
            break;
          }
          failed = 1;
          break;
        }
        c->received += r;
        if (c->received < size_) continue;
        if (keepalive_) {
          ops++;
          c->sent = c->received = 0;
          if (pump(ep, fd) < 0) failed = 1;
          continue;
        }
        if (close_mode_ == 1) {
          c->waiting_eof = 1;
          continue;
        }
        finish_conn(fd);
        ops++;
        open_conn(ep);
        break;
      }
      if (failed) {
        close(fd);
        errors++;
        open_conn(ep);
      }
    }
  }
  sweep_result(ops, errors);
  return 0;
}

/* Many connections, each sending one byte every interval and reading its echo. */
static int sweep_idle(int port, int count, double warm, double secs, double interval) {
  target_len = loopback(&target, port);
  int ep = epoll_create1(0);
  int *fds = calloc((size_t)count, sizeof *fds);
  double *due = calloc((size_t)count, sizeof *due);
  double start = now();
  for (int i = 0; i < count; i++) {
    int fd = sock(SOCK_STREAM);
    no_delay(fd);
    connect(fd, (struct sockaddr *)&target, target_len);
    add(ep, fd, EPOLLIN);
    fds[i] = fd;
    due[i] = start + interval * (i + 1) / count;
  }
  struct epoll_event events[SWEEP_EVENTS];
  double go = start + warm, end = go + secs;
  long ops = 0, errors = 0;
  int measuring = 0, next = 0;
  for (;;) {
    double t = now();
    if (opens(t, go, &measuring)) {
      ops = errors = 0;
      say_go();
    }
    if (t >= end) break;
    /* Pings fall due in index order, round and round. */
    for (int k = 0; k < count && due[next] <= t; k++) {
      if (write(fds[next], "p", 1) != 1) errors++;
      due[next] += interval;
      next = (next + 1) % count;
    }
    int n = epoll_wait(ep, events, SWEEP_EVENTS, 1);
    for (int i = 0; i < n; i++) {
      ssize_t r = read(events[i].data.fd, buf, sizeof buf);
      if (r > 0) ops += r;
      else if (r == 0 || errno != EAGAIN) {
        errors++;
        epoll_ctl(ep, EPOLL_CTL_DEL, events[i].data.fd, NULL);
      }
    }
  }
  sweep_result(ops, errors);
  return 0;
}

/* Round trips (rate 0): each socket keeps <window> datagrams in flight, an unanswered one is
 * replaced after 50 ms. One-way (rate > 0): <rate> datagrams/s spread over the sockets, no reply
 * expected; the sweep counts them at the backend. */
static int sweep_udp(int port, int sockets, int window, double warm, double secs, size_t size,
                     double rate) {
  target_len = loopback(&target, port);
  int ep = epoll_create1(0);
  int *fds = calloc((size_t)sockets, sizeof *fds);
  double *last = calloc((size_t)sockets, sizeof *last);
  int *inflight = calloc((size_t)sockets, sizeof *inflight);
  for (int i = 0; i < sockets; i++) {
    fds[i] = sock(SOCK_DGRAM);
    if (connect(fds[i], (struct sockaddr *)&target, target_len) < 0) die("udp connect");
    struct epoll_event e = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &e);
  }
  double start = now(), go = start + warm, end = go + secs, sent_until = start;
  long ops = 0, errors = 0, sent = 0;
  int measuring = 0, next = 0;
  if (rate <= 0)
    for (int i = 0; i < sockets; i++) {
      for (int w = 0; w < window; w++) send(fds[i], payload, size, 0);
      inflight[i] = window;
      last[i] = start;
    }
  struct epoll_event events[SWEEP_EVENTS];
  for (;;) {
    double t = now();
    if (opens(t, go, &measuring)) {
      ops = errors = sent = 0;
      say_go();
    }
    if (t >= end) break;
    if (rate > 0) {
      long due = (long)((t - sent_until) * rate);
      for (long k = 0; k < due; k++) {
        send(fds[next], payload, size, 0);
        next = (next + 1) % sockets;
        sent++;
      }
      if (due > 0) sent_until += (double)due / rate;
    } else {
      /* Replace what was lost: a socket silent for 50 ms gets its window again. */
      for (int i = 0; i < sockets; i++)
        if (t - last[i] > 0.05) {
          errors += inflight[i];
          for (int w = 0; w < window; w++) send(fds[i], payload, size, 0);
          inflight[i] = window;
          last[i] = t;
        }
    }
    int n = epoll_wait(ep, events, SWEEP_EVENTS, 1);
    for (int i = 0; i < n; i++) {
      int s = (int)events[i].data.u32;
      while (recv(fds[s], buf, sizeof buf, 0) >= 0) {
        if (rate > 0) continue;
        ops++;
        last[s] = t;
        send(fds[s], payload, size, 0);
      }
    }
  }
  printf("{\"ops\":%ld,\"errors\":%ld,\"sent\":%ld}\n", ops, errors, sent);
  fflush(stdout);
  return 0;
}

/* ---- main ------------------------------------------------------------------------------ */

static int arg(int argc, char **argv, int i) {
  if (i >= argc) {
    fprintf(stderr, "loadgen: missing argument %d\n", i);
    exit(2);
  }
  return atoi(argv[i]);
}

static double farg(int argc, char **argv, int i) {
  if (i >= argc) {
    fprintf(stderr, "loadgen: missing argument %d\n", i);
    exit(2);
  }
  return atof(argv[i]);
}

static size_t size_arg(int argc, char **argv, int i) {
  int size = arg(argc, argv, i);
  if (size < 1 || size > MAX_SIZE) {
    fprintf(stderr, "loadgen: size must be 1..%d\n", MAX_SIZE);
    exit(2);
  }
  return (size_t)size;
}

/* The sweep's modes: sweep-<what> <4|6> <port> ... */
static int sweep(const char *what, int argc, char **argv) {
  family = arg(argc, argv, 2);
  if (!strcmp(what, "backend")) return sweep_backend();
  int port = arg(argc, argv, 3);
  if (!strcmp(what, "tcp")) {
    size_ = (long)size_arg(argc, argv, 7);
    chunk_ = arg(argc, argv, 8);
    if (chunk_ < 1) return 2;
    keepalive_ = arg(argc, argv, 9);
    const char *close_mode = argc > 10 ? argv[10] : "client";
    close_mode_ = !strcmp(close_mode, "server") ? 1 : !strcmp(close_mode, "rst") ? 2 : 0;
    nodelay_ = arg(argc, argv, 11);
    return sweep_tcp(port, arg(argc, argv, 4), farg(argc, argv, 5), farg(argc, argv, 6));
  }
  if (!strcmp(what, "idle"))
    return sweep_idle(port, arg(argc, argv, 4), farg(argc, argv, 5), farg(argc, argv, 6),
                      farg(argc, argv, 7) / 1000);
  if (!strcmp(what, "udp"))
    return sweep_udp(port, arg(argc, argv, 4), arg(argc, argv, 5), farg(argc, argv, 6),
                     farg(argc, argv, 7), size_arg(argc, argv, 8), farg(argc, argv, 9));
  fprintf(stderr, "loadgen: unknown mode sweep-%s\n", what);
  return 2;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  memset(payload, 'x', sizeof payload);
  if (argc < 2) {
    fprintf(stderr, "usage: see the comment at the top of loadgen.c\n");
    return 2;
  }
  const char *mode = argv[1];
  /* The sweep's modes keep SIGTERM's default action, which ends them at once (the sweep stops its
   * backend so), and take their warm-up as an argument, not from LOADGEN_WARMUP_SECONDS. */
  if (!strncmp(mode, "sweep-", 6)) return sweep(mode + 6, argc, argv);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  const char *warmup = getenv("LOADGEN_WARMUP_SECONDS");
  if (warmup != NULL && *warmup != '\0') warmup_seconds = atof(warmup);
  if (!strcmp(mode, "echo-tcp")) return echo_tcp(arg(argc, argv, 2));
  if (!strcmp(mode, "echo-udp")) return echo_udp(arg(argc, argv, 2));
  if (!strcmp(mode, "tcp-rr"))
    return tcp_rr(arg(argc, argv, 2), arg(argc, argv, 3), farg(argc, argv, 4),
                  size_arg(argc, argv, 5));
  if (!strcmp(mode, "tcp-connect"))
    return tcp_connect(arg(argc, argv, 2), arg(argc, argv, 3), farg(argc, argv, 4),
                       size_arg(argc, argv, 5));
  if (!strcmp(mode, "tcp-latency"))
    return tcp_latency(arg(argc, argv, 2), farg(argc, argv, 3), size_arg(argc, argv, 4));
  if (!strcmp(mode, "tcp-idle")) return tcp_idle(arg(argc, argv, 2), arg(argc, argv, 3));
  if (!strcmp(mode, "udp-rr"))
    return udp_rr(arg(argc, argv, 2), arg(argc, argv, 3), arg(argc, argv, 4), farg(argc, argv, 5),
                  size_arg(argc, argv, 6));
  if (!strcmp(mode, "udp-sessions"))
    return udp_sessions(arg(argc, argv, 2), arg(argc, argv, 3), farg(argc, argv, 4),
                        size_arg(argc, argv, 5));
  fprintf(stderr, "loadgen: unknown mode %s\n", mode);
  return 2;
}
