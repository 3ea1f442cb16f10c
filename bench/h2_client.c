/*
 * A closed-loop gRPC unary load generator in C on libnghttp2 (the library h2load is built on),
 * for calls that each need their own token: h2load sends one header set per process, and the
 * Python and Node.js HTTP/2 clients cost ~200 us of CPU per call, on the CPU the bench shares
 * with PostgreSQL. This one costs about what h2load does.
 *
 * One TCP connection per call in flight (as bench/client.py has), one epoll loop. Each call
 * takes the next token in turn; its gRPC status is read from its trailers (or a trailers-only
 * answer's headers), not only the HTTP status.
 *
 *   h2_client HOST PORT PATH BODY_FILE TOKENS_FILE CONCURRENCY WARMUP_S DURATION_S TIMEOUT_S
 *
 * BODY_FILE is a framed request (5-byte gRPC prefix + message); TOKENS_FILE one token a line.
 * Prints "measure-start" and "measure-end" as the measured window opens and closes, then one
 * JSON object with the same fields as bench/client.py's result. Built by bench/native.py.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CODES 17 /* gRPC status codes 0..16; anything else counts as "other" */
static const char *CODE_NAMES[CODES + 1] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED", "no-grpc-status"};

typedef struct {
  int fd;
  nghttp2_session *session;
  int64_t began;   /* the call in flight: when it was sent */
  int status;      /* its grpc-status, or CODES when none was seen */
  int finished;    /* its stream closed: record it, send the next */
  int busy;        /* a call is in flight */
  int dead;        /* the connection failed */
  size_t body_off; /* how much of the body this call has handed to nghttp2 */
} conn_t;

static char *body;
static size_t body_len;
static char **auth_values; /* "Bearer <token>" */
static size_t token_count, next_token;
static char *path, *authority, timeout_value[32];
static int64_t record_from, stop_at;
static int64_t *latencies;
static size_t latency_count, latency_cap;
static long errors[CODES + 1];

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "h2_client: %s: %s\n", what, strerror(errno));
  exit(1);
}

static char *read_file(const char *name, size_t *len) {
  FILE *f = fopen(name, "rb");
  if (!f) die(name);
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *data = malloc((size_t)size + 1);
  if (fread(data, 1, (size_t)size, f) != (size_t)size) die(name);
  data[size] = 0;
  fclose(f);
  *len = (size_t)size;
  return data;
}

static void load_tokens(const char *name) {
  size_t len;
  char *text = read_file(name, &len);
  size_t cap = 1024;
  auth_values = malloc(cap * sizeof *auth_values);
  for (char *line = strtok(text, "\r\n"); line; line = strtok(NULL, "\r\n")) {
    if (!*line) continue;
    if (token_count == cap) auth_values = realloc(auth_values, (cap *= 2) * sizeof *auth_values);
    if (asprintf(&auth_values[token_count++], "Bearer %s", line) < 0) die("asprintf");
  }
  if (token_count == 0) {
    fprintf(stderr, "h2_client: no tokens in %s\n", name);
    exit(1);
  }
}

static ssize_t send_cb(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *u) {
  (void)s, (void)flags;
  conn_t *c = u;
  ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
  if (n < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? NGHTTP2_ERR_WOULDBLOCK
                                                                : NGHTTP2_ERR_CALLBACK_FAILURE;
  return n;
}

static int header_cb(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *u) {
  (void)s, (void)frame, (void)flags;
  conn_t *c = u;
  if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
    int code = 0;
    for (size_t i = 0; i < valuelen; i++) code = code * 10 + (value[i] - '0');
    c->status = (valuelen > 0 && valuelen < 3 && code < CODES) ? code : CODES;
  }
  return 0;
}

static int close_cb(nghttp2_session *s, int32_t stream, uint32_t error, void *u) {
  (void)s, (void)stream, (void)error;
  ((conn_t *)u)->finished = 1;
  return 0;
}

static ssize_t body_cb(nghttp2_session *s, int32_t stream, uint8_t *buf, size_t len,
                       uint32_t *flags, nghttp2_data_source *src, void *u) {
  (void)s, (void)stream, (void)src;
  conn_t *c = u;
  size_t n = body_len - c->body_off < len ? body_len - c->body_off : len;
  memcpy(buf, body + c->body_off, n);
  c->body_off += n;
  if (c->body_off == body_len) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

#define NV(n, v) \
  { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NO_COPY_NAME }

static void send_call(conn_t *c) {
  const char *auth = auth_values[next_token++ % token_count];
  nghttp2_nv headers[] = {
      NV(":method", "POST"),          NV(":scheme", "http"),
      NV(":path", path),              NV(":authority", authority),
      NV("content-type", "application/grpc"), NV("te", "trailers"),
      NV("grpc-timeout", timeout_value), NV("authorization", auth),
  };
  nghttp2_data_provider provider = {.read_callback = body_cb};
  c->body_off = 0;
  c->status = CODES;
  c->finished = 0;
  c->busy = 1;
  c->began = now_ns();
  if (nghttp2_submit_request(c->session, NULL, headers, sizeof headers / sizeof *headers,
                             &provider, c) < 0) {
    fprintf(stderr, "h2_client: submit failed\n");
    exit(1);
  }
}

static void record(conn_t *c, int status) {
  if (c->began < record_from) return;
  if (latency_count == latency_cap)
    latencies = realloc(latencies, (latency_cap = latency_cap ? latency_cap * 2 : 65536) *
                                       sizeof *latencies);
  latencies[latency_count++] = now_ns() - c->began;
  if (status != 0) errors[status]++;
}

static int connect_to(const char *host, int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (fd < 0 || inet_pton(AF_INET, host, &addr.sin_addr) != 1) die("socket");
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static double percentile_ms(double fraction) {
  if (latency_count == 0) return 0;
  size_t rank = (size_t)((double)latency_count * fraction + 0.999999);
  if (rank < 1) rank = 1;
  if (rank > latency_count) rank = latency_count;
  return (double)latencies[rank - 1] / 1e6;
}

static double cpu_seconds(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (double)u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + (double)u.ru_stime.tv_sec +
         u.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv) {
  if (argc != 10) {
    fprintf(stderr, "usage: h2_client HOST PORT PATH BODY_FILE TOKENS_FILE CONCURRENCY "
                    "WARMUP_S DURATION_S TIMEOUT_S\n");
    return 2;
  }
  const char *host = argv[1];
  int port = atoi(argv[2]);
  path = argv[3];
  body = read_file(argv[4], &body_len);
  load_tokens(argv[5]);
  int concurrency = atoi(argv[6]);
  double warmup = atof(argv[7]), duration = atof(argv[8]);
  snprintf(timeout_value, sizeof timeout_value, "%ldm", (long)(atof(argv[9]) * 1000));
  if (asprintf(&authority, "%s:%d", host, port) < 0) die("asprintf");

  nghttp2_session_callbacks *callbacks;
  nghttp2_session_callbacks_new(&callbacks);
  nghttp2_session_callbacks_set_send_callback(callbacks, send_cb);
  nghttp2_session_callbacks_set_on_header_callback(callbacks, header_cb);
  nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, close_cb);

  int ep = epoll_create1(0);
  conn_t *conns = calloc((size_t)concurrency, sizeof *conns);
  for (int i = 0; i < concurrency; i++) {
    conn_t *c = &conns[i];
    c->fd = connect_to(host, port);
    nghttp2_session_client_new(&c->session, callbacks, c);
    nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, NULL, 0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
  }

  double cpu_start = cpu_seconds();
  int64_t start = now_ns();
  record_from = start + (int64_t)(warmup * 1e9);
  stop_at = record_from + (int64_t)(duration * 1e9);
  int marked_start = 0, marked_end = 0, in_flight = 0;
  for (int i = 0; i < concurrency; i++) {
    send_call(&conns[i]);
    nghttp2_session_send(conns[i].session);
    in_flight++;
  }

  static uint8_t buf[65536];
  struct epoll_event events[256];
  while (in_flight > 0) {
    int n = epoll_wait(ep, events, 256, 5);
    int64_t t = now_ns();
    if (!marked_start && t >= record_from) marked_start = 1, puts("measure-start"), fflush(stdout);
    if (!marked_end && t >= stop_at) marked_end = 1, puts("measure-end"), fflush(stdout);
    for (int e = 0; e < n; e++) {
      conn_t *c = events[e].data.ptr;
      if (c->dead) continue;
      for (;;) {
        ssize_t got = recv(c->fd, buf, sizeof buf, 0);
        if (got > 0) {
          if (nghttp2_session_mem_recv(c->session, buf, (size_t)got) < 0) got = 0;
          else continue;
        }
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        c->dead = 1; /* closed or broken: its call in flight fails */
        break;
      }
      if (c->dead) {
        if (c->busy) record(c, CODES), c->busy = 0, in_flight--;
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        continue;
      }
      if (c->finished && c->busy) {
        record(c, c->status);
        c->busy = 0;
        in_flight--;
        if (now_ns() < stop_at) send_call(c), in_flight++;
      }
      nghttp2_session_send(c->session);
    }
  }
  int64_t wall = now_ns() - start;
  double cpu = cpu_seconds() - cpu_start;
  if (!marked_end) puts("measure-end");
  for (int i = 0; i < concurrency; i++) {
    nghttp2_session_del(conns[i].session);
    close(conns[i].fd);
  }

  qsort(latencies, latency_count, sizeof *latencies, cmp_i64);
  long failed = 0;
  for (int i = 1; i <= CODES; i++) failed += errors[i];
  long calls = (long)latency_count;
  printf("{\"calls\": %ld, \"ok\": %ld, \"errors\": %ld, \"error_codes\": {", calls,
         calls - failed, failed);
  const char *sep = "";
  for (int i = 1; i <= CODES; i++)
    if (errors[i]) printf("%s\"%s\": %ld", sep, CODE_NAMES[i], errors[i]), sep = ", ";
  size_t used = next_token;
  printf("}, \"rps\": %.1f, \"p50_ms\": %.3f, \"p90_ms\": %.3f, \"p99_ms\": %.3f, "
         "\"max_ms\": %.3f, \"tokens\": %zu, \"tokens_reused\": %zu, \"loadgen_cpu\": %.4f}\n",
         duration > 0 ? (double)(calls - failed) / duration : 0.0,
         percentile_ms(0.50), percentile_ms(0.90), percentile_ms(0.99),
         latency_count ? (double)latencies[latency_count - 1] / 1e6 : 0.0, token_count,
         used > token_count ? used - token_count : 0, cpu / ((double)wall / 1e9));
  return 0;
}
