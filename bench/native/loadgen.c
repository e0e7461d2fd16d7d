/*
 * Load generator and echo backends for the l4proxy benchmark (bench/README.md).
 *
 * Written in C so that, on a 2-core machine, the client and the backend cost far less CPU per
 * operation than any proxy under test: what is measured is the proxy, not the generator.
 * Every client targets 127.0.0.1 only. Clients print one JSON line on stdout; echo servers
 * print "ready <port>" and run until SIGTERM.
 *
 *   loadgen echo-tcp <port>
 *   loadgen echo-udp <port>
 *   loadgen tcp-rr <port> <connections> <seconds> <size>
 *   loadgen tcp-connect <port> <concurrency> <seconds> <size>
 *   loadgen tcp-latency <port> <seconds> <size>
 *   loadgen udp-rr <port> <sockets> <window> <seconds> <size>
 *   loadgen udp-sessions <port> <concurrency> <seconds> <size>
 *   loadgen tcp-idle <port> <count>        (holds the connections until stdin closes)
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

static struct sockaddr_in loopback(int port) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
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

static void result(const char *name, long ops, double seconds, long errors, double cpu,
                   const char *extra) {
  printf("{\"scenario\":\"%s\",\"ops\":%ld,\"seconds\":%.6f,\"rate\":%.3f,\"errors\":%ld,"
         "\"cpu\":%.6f%s}\n",
         name, ops, seconds, seconds > 0 ? (double)ops / seconds : 0.0, errors, cpu,
         extra ? extra : "");
  fflush(stdout);
}

/* ---- echo servers ---------------------------------------------------------------------- */

static volatile sig_atomic_t stopping = 0;
static void on_term(int sig) {
  (void)sig;
  stopping = 1;
}

static int listen_socket(int type, int port) {
  int fd = socket(AF_INET, type, 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = loopback(port);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
  if (type == SOCK_STREAM && listen(fd, 4096) < 0) die("listen");
  socklen_t len = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &len);
  printf("ready %d\n", ntohs(a.sin_port));
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
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct sockaddr_in a = loopback(port);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
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
  double start = now(), warm = start + warmup_seconds, end = warm + seconds;
  double cpu0 = 0;
  int warmed = 0;
  long ops = 0, errors = 0;
  for (int i = 0; i < conns; i++) write_all(cs[i].fd, payload, size);
  struct epoll_event events[MAX_EVENTS];
  for (;;) {
    double t = now();
    if (!warmed && t >= warm) {
      warmed = 1;
      ops = 0;
      cpu0 = cpu_seconds();
    }
    if (t >= end) break;
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
  double elapsed = now() - warm;
  result("tcp-rr", ops, elapsed, errors, cpu_seconds() - cpu0, NULL);
  return 0;
}

static int tcp_connect_start(int ep, struct conn *c, uint32_t slot, int port) {
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (c->fd < 0) return -1;
  no_delay(c->fd);
  c->got = 0;
  c->connecting = 1;
  struct sockaddr_in a = loopback(port);
  int r = connect(c->fd, (struct sockaddr *)&a, sizeof a);
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
  double start = now(), warm = start + warmup_seconds, end = warm + seconds;
  double cpu0 = 0;
  int warmed = 0;
  struct epoll_event events[MAX_EVENTS];
  for (;;) {
    double t = now();
    if (!warmed && t >= warm) {
      warmed = 1;
      ops = 0;
      errors = 0;
      cpu0 = cpu_seconds();
    }
    if (t >= end) break;
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
  double elapsed = now() - warm;
  result("tcp-connect", ops, elapsed, errors, cpu_seconds() - cpu0, NULL);
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
  double start = now(), warm = start + warmup_seconds, end = warm + seconds;
  double cpu0 = 0;
  int warmed = 0;
  long errors = 0;
  for (;;) {
    double t0 = now();
    if (!warmed && t0 >= warm) {
      warmed = 1;
      count = 0;
      cpu0 = cpu_seconds();
    }
    if (t0 >= end) break;
    if (write_all(fd, payload, size) < 0 || read_all(fd, size) < 0) {
      errors++;
      break;
    }
    if (count < cap) samples[count++] = (now() - t0) * 1e6;
  }
  double elapsed = now() - warm;
  qsort(samples, count, sizeof *samples, compare_double);
  char extra[128];
  double p50 = count ? samples[count / 2] : 0, p99 = count ? samples[(count * 99) / 100] : 0;
  snprintf(extra, sizeof extra, ",\"p50_us\":%.3f,\"p99_us\":%.3f", p50, p99);
  result("tcp-latency", (long)count, elapsed, errors, cpu_seconds() - cpu0, extra);
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
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  struct sockaddr_in a = loopback(port);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
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
  double warm = start + warmup_seconds, end = warm + seconds;
  double cpu0 = 0, next_check = start + 0.05;
  int warmed = 0;
  long ops = 0, lost = 0;
  struct epoll_event events[MAX_EVENTS];
  for (;;) {
    double t = now();
    if (!warmed && t >= warm) {
      warmed = 1;
      ops = 0;
      lost = 0;
      cpu0 = cpu_seconds();
    }
    if (t >= end) break;
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
  double elapsed = now() - warm;
  result("udp-rr", ops, elapsed, lost, cpu_seconds() - cpu0, NULL);
  return 0;
}

static int udp_sessions(int port, int concurrency, double seconds, size_t size) {
  int ep = epoll_create1(0);
  struct udp_slot *ss = calloc((size_t)concurrency, sizeof *ss);
  long ops = 0, lost = 0;
  double start = now();
  for (int i = 0; i < concurrency; i++) ss[i].fd = -1;
  double warm = start + warmup_seconds, end = warm + seconds;
  double cpu0 = 0;
  int warmed = 0;
  struct epoll_event events[MAX_EVENTS];
  for (;;) {
    double t = now();
    if (!warmed && t >= warm) {
      warmed = 1;
      ops = 0;
      lost = 0;
      cpu0 = cpu_seconds();
    }
    if (t >= end) break;
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
  double elapsed = now() - warm;
  result("udp-sessions", ops, elapsed, lost, cpu_seconds() - cpu0, NULL);
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

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  memset(payload, 'x', sizeof payload);
  const char *warmup = getenv("LOADGEN_WARMUP_SECONDS");
  if (warmup != NULL && *warmup != '\0') warmup_seconds = atof(warmup);
  if (argc < 2) {
    fprintf(stderr, "usage: see the comment at the top of loadgen.c\n");
    return 2;
  }
  const char *mode = argv[1];
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
