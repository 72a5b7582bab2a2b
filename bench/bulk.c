// bulk: the bulk-throughput endpoints of the benchmark (one long TCP stream through the captured path).
//   bulk serve PORT             accept connections one after the other; write zeros to each until the peer closes
//   bulk recv HOST PORT SECS    connect, read for SECS seconds, print {"bytes":N,"seconds":T} and close
//   bulk stall HOST PORT BYTES MS   connect, read nothing for MS ms (the writer runs ahead), then read BYTES,
//                                   print {"bytes":N,"seconds":T} (the read, after the stall) and close
// Plain C so that the endpoints cost as little CPU as possible: on 2 cores every cycle they use is taken
// from the proxies being measured. Compiled by bench/world.ts (cc -O2) into dist/bench/bulk.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF (256 * 1024)
static char buf[BUF];

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int serve(int port) {
  int one = 1;
  int l = socket(AF_INET, SOCK_STREAM, 0);
  if (l < 0) return perror("socket"), 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY)};
  if (bind(l, (struct sockaddr *)&a, sizeof a) < 0) return perror("bind"), 1;
  if (listen(l, 64) < 0) return perror("listen"), 1;
  printf("ready\n");
  fflush(stdout);
  for (;;) {
    int c = accept(l, NULL, NULL);
    if (c < 0) {
      if (errno == EINTR) continue;
      return perror("accept"), 1;
    }
    for (;;) {
      ssize_t n = send(c, buf, BUF, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
    }
    close(c);
  }
}

static int recv_for(const char *host, int port, double secs) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) return perror("socket"), 1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  if (inet_pton(AF_INET, host, &a.sin_addr) != 1) return fprintf(stderr, "bad address %s\n", host), 2;
  if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) return perror("connect"), 1;
  unsigned long long bytes = 0;
  double start = 0, t = 0;
  for (;;) {
    ssize_t n = recv(s, buf, BUF, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      fprintf(stderr, "stream ended early (%s)\n", n == 0 ? "closed" : strerror(errno));
      break;
    }
    t = now();
    if (start == 0) start = t; // clock starts at the first byte (connect and proxy set-up excluded)
    else bytes += (unsigned long long)n;
    if (t - start >= secs) break;
  }
  close(s);
  printf("{\"bytes\":%llu,\"seconds\":%.6f}\n", bytes, t - start);
  return 0;
}

static int recv_stalled(const char *host, int port, unsigned long long want, int stall_ms) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) return perror("socket"), 1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  if (inet_pton(AF_INET, host, &a.sin_addr) != 1) return fprintf(stderr, "bad address %s\n", host), 2;
  if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) return perror("connect"), 1;
  struct timespec ts = {.tv_sec = stall_ms / 1000, .tv_nsec = (long)(stall_ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
  unsigned long long bytes = 0;
  double start = now();
  while (bytes < want) {
    ssize_t n = recv(s, buf, BUF, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      fprintf(stderr, "stream ended early (%s)\n", n == 0 ? "closed" : strerror(errno));
      break;
    }
    bytes += (unsigned long long)n;
  }
  close(s);
  printf("{\"bytes\":%llu,\"seconds\":%.6f}\n", bytes, now() - start);
  return bytes >= want ? 0 : 1;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc == 3 && strcmp(argv[1], "serve") == 0) return serve(atoi(argv[2]));
  if (argc == 5 && strcmp(argv[1], "recv") == 0) return recv_for(argv[2], atoi(argv[3]), atof(argv[4]));
  if (argc == 6 && strcmp(argv[1], "stall") == 0) return recv_stalled(argv[2], atoi(argv[3]), strtoull(argv[4], NULL, 10), atoi(argv[5]));
  fprintf(stderr, "usage: bulk serve PORT | bulk recv HOST PORT SECONDS | bulk stall HOST PORT BYTES STALL_MS\n");
  return 2;
}
