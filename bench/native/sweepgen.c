/*
 * Load generator and backend of the parameter sweep (bench/sweep.ts), IPv4 or IPv6 loopback only.
 * Every client runs <warm> seconds unmeasured, prints "go" on stdout, runs <secs> measured seconds
 * and prints one JSON line {"ops":N,"errors":E}. The backend prints "ready <tcp> <udp>" and takes
 * commands on stdin, one a line: "tcp echo" | "tcp close <n>" (close after echoing n bytes),
 * "udp echo" | "udp sink", "count" (prints "count <udp datagrams received>").
 *
 *   sweepgen backend <4|6>
 *   sweepgen tcp <4|6> <port> <conc> <warm> <secs> <size> <chunk> <keepalive> <close> <nodelay>
 *       close: client | server | rst; keepalive 1 = round trips of <size> on one connection
 *   sweepgen idle <4|6> <port> <conns> <warm> <secs> <interval ms>
 *   sweepgen udp <4|6> <port> <sockets> <window> <warm> <secs> <size> <oneway rate/s, 0 = rr>
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
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 512
#define MAX_FD 65536
#define BUF 65536

static char buf[BUF];
static char payload[BUF];
static int family = 4;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
  fprintf(stderr, "sweepgen: %s: %s\n", what, strerror(errno));
  exit(2);
}

static void nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

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

static int sock(int type) {
  int fd = socket(family == 6 ? AF_INET6 : AF_INET, type | SOCK_NONBLOCK, 0);
  if (fd < 0) die("socket");
  return fd;
}

static int bound_port(int fd) {
  struct sockaddr_storage s;
  socklen_t len = sizeof s;
  getsockname(fd, (struct sockaddr *)&s, &len);
  return ntohs(family == 6 ? ((struct sockaddr_in6 *)&s)->sin6_port
                           : ((struct sockaddr_in *)&s)->sin_port);
}

static void add(int ep, int fd, uint32_t events) {
  struct epoll_event e = {.events = events, .data.fd = fd};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0) die("epoll_ctl");
}

static void mod(int ep, int fd, uint32_t events) {
  struct epoll_event e = {.events = events, .data.fd = fd};
  epoll_ctl(ep, EPOLL_CTL_MOD, fd, &e);
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

/* ---- backend ------------------------------------------------------------------------------ */

static long echoed[MAX_FD];

static int backend(void) {
  int tcp = sock(SOCK_STREAM), udp = sock(SOCK_DGRAM), one = 1;
  setsockopt(tcp, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_storage a;
  socklen_t alen = loopback(&a, 0);
  if (bind(tcp, (struct sockaddr *)&a, alen) < 0 || listen(tcp, 4096) < 0) die("tcp listen");
  if (bind(udp, (struct sockaddr *)&a, alen) < 0) die("udp bind");
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
  struct epoll_event events[MAX_EVENTS];
  for (;;) {
    int n = epoll_wait(ep, events, MAX_EVENTS, -1);
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
          if (!strncmp(line, "tcp echo", 8)) close_after = 0;
          else if (!strncmp(line, "tcp close ", 10)) close_after = atol(line + 10);
          else if (!strcmp(line, "udp echo")) udp_echo = 1;
          else if (!strcmp(line, "udp sink")) udp_echo = 0;
          else if (!strcmp(line, "count")) {
            printf("count %ld\n", udp_rx);
            fflush(stdout);
          }
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

/* ---- TCP clients -------------------------------------------------------------------------- */

struct conn {
  long sent, received;
  int waiting_eof;
};
static struct conn conns[MAX_FD];
static long size_, chunk_;
static int keepalive_, nodelay_, close_mode_; /* 0 client, 1 server, 2 rst */
static struct sockaddr_storage target;
static socklen_t target_len;

static int open_conn(int ep) {
  int fd = sock(SOCK_STREAM), one = 1;
  if (nodelay_) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&target, target_len) < 0 && errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  memset(&conns[fd], 0, sizeof conns[fd]);
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
  struct conn *c = &conns[fd];
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

static int tcp_client(int port, int conc, double warm, double secs) {
  target_len = loopback(&target, port);
  int ep = epoll_create1(0);
  for (int i = 0; i < conc; i++) open_conn(ep);
  struct epoll_event events[MAX_EVENTS];
  double start = now(), go = start + warm, end = go + secs;
  long ops = 0, errors = 0;
  int measuring = 0;
  for (;;) {
    double t = now();
    if (!measuring && t >= go) {
      measuring = 1;
      ops = errors = 0;
      printf("go\n");
      fflush(stdout);
    }
    if (t >= end) break;
    int n = epoll_wait(ep, events, MAX_EVENTS, 5);
    for (int i = 0; i < n; i++) {
      int fd = events[i].data.fd;
      struct conn *c = &conns[fd];
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
  printf("{\"ops\":%ld,\"errors\":%ld}\n", ops, errors);
  fflush(stdout);
  return 0;
}

/* Many connections, each sending one byte every interval and reading its echo. */
static int idle_client(int port, int count, double warm, double secs, double interval) {
  target_len = loopback(&target, port);
  int ep = epoll_create1(0);
  int *fds = calloc((size_t)count, sizeof *fds);
  double *due = calloc((size_t)count, sizeof *due);
  double start = now();
  for (int i = 0; i < count; i++) {
    int fd = sock(SOCK_STREAM), one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    connect(fd, (struct sockaddr *)&target, target_len);
    add(ep, fd, EPOLLIN);
    fds[i] = fd;
    due[i] = start + interval * (i + 1) / count;
  }
  struct epoll_event events[MAX_EVENTS];
  double go = start + warm, end = go + secs;
  long ops = 0, errors = 0;
  int measuring = 0, next = 0;
  for (;;) {
    double t = now();
    if (!measuring && t >= go) {
      measuring = 1;
      ops = errors = 0;
      printf("go\n");
      fflush(stdout);
    }
    if (t >= end) break;
    /* Pings fall due in index order, round and round. */
    for (int k = 0; k < count && due[next] <= t; k++) {
      if (write(fds[next], "p", 1) != 1) errors++;
      due[next] += interval;
      next = (next + 1) % count;
    }
    int n = epoll_wait(ep, events, MAX_EVENTS, 1);
    for (int i = 0; i < n; i++) {
      ssize_t r = read(events[i].data.fd, buf, sizeof buf);
      if (r > 0) ops += r;
      else if (r == 0 || errno != EAGAIN) {
        errors++;
        epoll_ctl(ep, EPOLL_CTL_DEL, events[i].data.fd, NULL);
      }
    }
  }
  printf("{\"ops\":%ld,\"errors\":%ld}\n", ops, errors);
  fflush(stdout);
  return 0;
}

/* ---- UDP client --------------------------------------------------------------------------- */

/* Round trips (rate 0): each socket keeps <window> datagrams in flight, an unanswered one is
 * replaced after 50 ms. One-way (rate > 0): <rate> datagrams/s spread over the sockets, no reply
 * expected; the sweep counts them at the backend. */
static int udp_client(int port, int sockets, int window, double warm, double secs, size_t size,
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
  struct epoll_event events[MAX_EVENTS];
  for (;;) {
    double t = now();
    if (!measuring && t >= go) {
      measuring = 1;
      ops = errors = sent = 0;
      printf("go\n");
      fflush(stdout);
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
    int n = epoll_wait(ep, events, MAX_EVENTS, 1);
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

static double farg(int argc, char **argv, int i) {
  if (i >= argc) {
    fprintf(stderr, "sweepgen: missing argument %d\n", i);
    exit(2);
  }
  return atof(argv[i]);
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  memset(payload, 'x', sizeof payload);
  if (argc < 3) {
    fprintf(stderr, "usage: see the comment at the top of sweepgen.c\n");
    return 2;
  }
  family = (int)farg(argc, argv, 2);
  const char *mode = argv[1];
  if (!strcmp(mode, "backend")) return backend();
  int port = (int)farg(argc, argv, 3);
  if (!strcmp(mode, "tcp")) {
    size_ = (long)farg(argc, argv, 7);
    chunk_ = (long)farg(argc, argv, 8);
    if (size_ < 1 || size_ > BUF || chunk_ < 1) return 2;
    keepalive_ = (int)farg(argc, argv, 9);
    const char *close_mode = argc > 10 ? argv[10] : "client";
    close_mode_ = !strcmp(close_mode, "server") ? 1 : !strcmp(close_mode, "rst") ? 2 : 0;
    nodelay_ = (int)farg(argc, argv, 11);
    return tcp_client(port, (int)farg(argc, argv, 4), farg(argc, argv, 5), farg(argc, argv, 6));
  }
  if (!strcmp(mode, "idle"))
    return idle_client(port, (int)farg(argc, argv, 4), farg(argc, argv, 5), farg(argc, argv, 6),
                       farg(argc, argv, 7) / 1000);
  if (!strcmp(mode, "udp"))
    return udp_client(port, (int)farg(argc, argv, 4), (int)farg(argc, argv, 5),
                      farg(argc, argv, 6), farg(argc, argv, 7), (size_t)farg(argc, argv, 8),
                      farg(argc, argv, 9));
  fprintf(stderr, "sweepgen: unknown mode %s\n", mode);
  return 2;
}
