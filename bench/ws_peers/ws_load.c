/* WebSocket load client for ws_bench.py: the same job as its Python client
 * (LoadClient), at C speed, so that the fastest server is what is measured.
 *
 *     cc -O2 -o ws_load ws_load.c
 *     ws_load PORT RAW KIND SIZE CONNECTIONS MESSAGES WARMUP CONCURRENCY TIMEOUT
 *
 * RAW 1: the target is raw_echo (no handshake; frames come back still masked).
 * KIND text|binary, SIZE bytes per message. It opens CONNECTIONS (at most
 * CONCURRENCY handshakes at a time), runs WARMUP round trips on each, prints
 * `ready {json}`, waits for `go` on stdin (answering pings meanwhile), runs
 * MESSAGES round trips on each connection -- send one, wait for its echo,
 * send the next -- prints `done`, closes, and prints `result {json}` with
 * start, end (CLOCK_MONOTONIC seconds, as Python's time.monotonic), cpu
 * seconds, every latency in seconds, and errors by kind.
 *
 * One frame is masked once for all connections and the echo is compared
 * byte for byte as it streams in, frame by frame (a fragmented echo, or
 * pings between, are fine). No permessage-deflate is offered. The handshake
 * check is the 101 status and no extension; ws_bench.py checks the accept key
 * and both message types once per server before the load starts.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { CONNECTING, HANDSHAKING, OPEN, CLOSED };
enum { E_CONNECT, E_HANDSHAKE, E_CLOSED, E_WRONG, E_UNEXPECTED, E_TIMEOUT_OPENING, E_TIMEOUT,
       E_KINDS };
static const char *error_names[E_KINDS] = {
    "connect", "handshake", "closed by server", "wrong echo", "unexpected frame",
    "timeout opening", "timeout"};
static long error_counts[E_KINDS];
static char first_error[E_KINDS][160];

#define RECV_SIZE (256 * 1024)
#define HEAD_MAX 4096
#define PONG_MAX 1024

struct conn {
    int fd, state, writing;
    size_t out_off;                /* bytes of the frame sent so far; == frame_len: none due */
    unsigned char pong[PONG_MAX];  /* control frames queued behind the frame */
    size_t pong_len;
    char *head;                    /* handshake response being read */
    size_t head_len;
    /* the frame being received */
    unsigned char hdr[14];
    int hdr_len, hdr_need;
    uint64_t payload_left;
    int frame_opcode, frame_fin, in_payload;
    unsigned char ctrl[125];
    int ctrl_len;
    /* the echo being received */
    int outstanding, fragmented;
    size_t echo_off;               /* payload bytes matched (raw: frame bytes) */
    long remaining;
    double sent_at;
};

static struct conn *conns;
static int nconns, epfd, port, raw, opcode;
static unsigned char *frame, *payload, mask_key[4];
static size_t frame_len, payload_len;
static double deadline;
static long pending;
static double *latencies;
static size_t nlatencies, latencies_cap;
static int recording;
static unsigned char *rbuf;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec
        + ru.ru_stime.tv_usec / 1e6;
}

static void set_events(struct conn *c, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = c };
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void fail(struct conn *c, int kind, const char *detail)
{
    if (c->state == CLOSED)
        return;
    if (c->outstanding || c->remaining)
        pending--;
    error_counts[kind]++;
    if (!first_error[kind][0] && detail)
        snprintf(first_error[kind], sizeof first_error[kind], "%s", detail);
    c->state = CLOSED;
    c->outstanding = 0;
    c->remaining = 0;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
}

static void build_frame(unsigned char *out, size_t *len, int op, const unsigned char *data,
                        size_t n)
{
    size_t pos = 0;
    out[pos++] = 0x80 | op;
    if (n < 126) {
        out[pos++] = 0x80 | n;
    } else if (n < 65536) {
        out[pos++] = 0x80 | 126;
        out[pos++] = n >> 8;
        out[pos++] = n & 0xff;
    } else {
        out[pos++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            out[pos++] = (n >> (8 * i)) & 0xff;
    }
    memcpy(out + pos, mask_key, 4);
    pos += 4;
    for (size_t i = 0; i < n; i++)
        out[pos + i] = data[i] ^ mask_key[i & 3];
    *len = pos + n;
}

/* Write what is due: the rest of the frame, then queued pongs. */
static void flush(struct conn *c)
{
    while (c->out_off < frame_len) {
        ssize_t n = write(c->fd, frame + c->out_off, frame_len - c->out_off);
        if (n < 0) {
            if (errno == EAGAIN)
                goto blocked;
            fail(c, E_CLOSED, strerror(errno));
            return;
        }
        c->out_off += n;
    }
    while (c->pong_len) {
        ssize_t n = write(c->fd, c->pong, c->pong_len);
        if (n < 0) {
            if (errno == EAGAIN)
                goto blocked;
            fail(c, E_CLOSED, strerror(errno));
            return;
        }
        memmove(c->pong, c->pong + n, c->pong_len - n);
        c->pong_len -= n;
    }
    if (c->writing) {
        c->writing = 0;
        set_events(c, EPOLLIN);
    }
    return;
blocked:
    if (!c->writing) {
        c->writing = 1;
        set_events(c, EPOLLIN | EPOLLOUT);
    }
}

static void send_next(struct conn *c)
{
    c->remaining--;
    c->outstanding = 1;
    c->echo_off = 0;
    c->sent_at = now();
    c->out_off = 0;
    flush(c);
}

static void echoed(struct conn *c)
{
    double t = now();
    if (recording && nlatencies < latencies_cap)
        latencies[nlatencies++] = t - c->sent_at;
    c->outstanding = 0;
    if (c->remaining)
        send_next(c);
    else
        pending--;
}

static void queue_control(struct conn *c, int op, const unsigned char *data, size_t n)
{
    size_t len;
    unsigned char out[2 + 4 + 125];
    if (c->pong_len + 6 + n > PONG_MAX)
        return;   /* a flood of pings: drop the answer, the server may close */
    build_frame(out, &len, op, data, n);
    memcpy(c->pong + c->pong_len, out, len);
    c->pong_len += len;
    if (c->out_off >= frame_len)
        flush(c);
}

/* A whole frame header is in c->hdr. */
static void on_header(struct conn *c)
{
    unsigned char *h = c->hdr;
    c->frame_fin = h[0] & 0x80;
    c->frame_opcode = h[0] & 0x0f;
    uint64_t len = h[1] & 0x7f;
    if (len == 126)
        len = (uint64_t)h[2] << 8 | h[3];
    else if (len == 127)
        for (int i = 2; i < 10; i++)
            len = (len << 8) | h[i];
    c->payload_left = len;
    c->in_payload = 1;
    c->ctrl_len = 0;
    if (h[1] & 0x80) {
        fail(c, E_WRONG, "masked frame from the server");
        return;
    }
    if (c->frame_opcode >= 8)
        return;
    if (!c->outstanding) {
        fail(c, E_UNEXPECTED, "data frame with nothing outstanding");
        return;
    }
    if (c->frame_opcode == 0 ? !c->fragmented : (c->fragmented || c->frame_opcode != opcode)) {
        char why[80];
        snprintf(why, sizeof why, "opcode %d out of sequence or not %d", c->frame_opcode, opcode);
        fail(c, E_WRONG, why);
        return;
    }
    if (c->echo_off + len > payload_len) {
        fail(c, E_WRONG, "echo longer than the message");
        return;
    }
}

/* The current frame's payload has all arrived. */
static void on_frame_end(struct conn *c)
{
    c->in_payload = 0;
    c->hdr_len = 0;
    int op = c->frame_opcode;
    if (op == 9) {
        queue_control(c, 10, c->ctrl, c->ctrl_len);
    } else if (op == 8) {
        char why[60];
        snprintf(why, sizeof why, "close frame, code %d",
                 c->ctrl_len >= 2 ? c->ctrl[0] << 8 | c->ctrl[1] : -1);
        fail(c, E_CLOSED, why);
    } else if (op < 8) {
        c->fragmented = !c->frame_fin;
        if (c->frame_fin) {
            if (c->echo_off != payload_len)
                fail(c, E_WRONG, "echo shorter than the message");
            else
                echoed(c);
        }
    }
}

/* Feed received bytes through the frame parser, comparing payload as it streams. */
static void feed(struct conn *c, const unsigned char *data, size_t n)
{
    size_t i = 0;
    while (i < n && c->state == OPEN) {
        if (raw) {   /* raw_echo: the exact frame comes back */
            size_t k = frame_len - c->echo_off;
            if (!c->outstanding) {
                fail(c, E_UNEXPECTED, "bytes with nothing outstanding");
                return;
            }
            if (k > n - i)
                k = n - i;
            if (memcmp(data + i, frame + c->echo_off, k)) {
                fail(c, E_WRONG, "raw echo changed the bytes");
                return;
            }
            c->echo_off += k;
            i += k;
            if (c->echo_off == frame_len)
                echoed(c);
            continue;
        }
        if (!c->in_payload) {
            if (c->hdr_len < 2) {
                c->hdr[c->hdr_len++] = data[i++];
                if (c->hdr_len == 2) {
                    int l = c->hdr[1] & 0x7f;
                    c->hdr_need = 2 + (l == 126 ? 2 : l == 127 ? 8 : 0) +
                                  (c->hdr[1] & 0x80 ? 4 : 0);
                }
            } else {
                c->hdr[c->hdr_len++] = data[i++];
            }
            if (c->hdr_len >= 2 && c->hdr_len == c->hdr_need) {
                on_header(c);
                if (c->state == OPEN && c->payload_left == 0)
                    on_frame_end(c);
            }
            continue;
        }
        size_t k = c->payload_left < n - i ? c->payload_left : n - i;
        if (c->frame_opcode >= 8) {
            if (c->ctrl_len + k > sizeof c->ctrl) {
                fail(c, E_WRONG, "control frame over 125 bytes");
                return;
            }
            memcpy(c->ctrl + c->ctrl_len, data + i, k);
            c->ctrl_len += k;
        } else {
            if (memcmp(data + i, payload + c->echo_off, k)) {
                fail(c, E_WRONG, "payload differs");
                return;
            }
            c->echo_off += k;
        }
        c->payload_left -= k;
        i += k;
        if (c->payload_left == 0)
            on_frame_end(c);
    }
}

static void on_readable(struct conn *c)
{
    ssize_t n = read(c->fd, rbuf, RECV_SIZE);
    if (n < 0 && errno == EAGAIN)
        return;
    if (n <= 0) {
        fail(c, E_CLOSED, n ? strerror(errno) : "end of stream");
        return;
    }
    feed(c, rbuf, n);
}

/* --- Opening connections. */

static char request[512];
static size_t request_len;

static int start_connect(struct conn *c)
{
    int one = 1;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) {
        error_counts[E_CONNECT]++;
        if (!first_error[E_CONNECT][0])
            snprintf(first_error[E_CONNECT], 160, "socket: %s", strerror(errno));
        c->state = CLOSED;
        return 0;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port) };
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->out_off = frame_len;   /* nothing due */
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        error_counts[E_CONNECT]++;
        if (!first_error[E_CONNECT][0])
            snprintf(first_error[E_CONNECT], 160, "%s", strerror(errno));
        close(c->fd);
        c->state = CLOSED;
        return 0;
    }
    c->state = CONNECTING;
    struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = c };
    epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
    return 1;
}

static void on_opening_event(struct conn *c)
{
    if (c->state == CONNECTING) {
        int code = 0;
        socklen_t len = sizeof code;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &code, &len);
        if (code) {
            fail(c, E_CONNECT, strerror(code));
            return;
        }
        set_events(c, EPOLLIN);
        if (raw) {
            c->state = OPEN;
            return;
        }
        if (write(c->fd, request, request_len) != (ssize_t)request_len) {
            fail(c, E_CONNECT, "handshake request not sent whole");
            return;
        }
        c->state = HANDSHAKING;
        c->head = malloc(HEAD_MAX + 1);
        c->head_len = 0;
        return;
    }
    ssize_t n = read(c->fd, c->head + c->head_len, HEAD_MAX - c->head_len);
    if (n < 0 && errno == EAGAIN)
        return;
    if (n <= 0) {
        fail(c, E_HANDSHAKE, "closed before the response head");
        goto done;
    }
    c->head_len += n;
    c->head[c->head_len] = 0;
    char *end = strstr(c->head, "\r\n\r\n");
    if (!end) {
        if (c->head_len == HEAD_MAX)
            fail(c, E_HANDSHAKE, "response head over 4 KiB");
        else
            return;
        goto done;
    }
    *end = 0;
    if (strncmp(c->head, "HTTP/1.1 101", 12) != 0) {
        char why[120];
        snprintf(why, sizeof why, "status line %.80s", c->head);
        fail(c, E_HANDSHAKE, why);
        goto done;
    }
    if (strcasestr(c->head, "\nsec-websocket-extensions:")) {
        fail(c, E_HANDSHAKE, "extension negotiated though none was offered");
        goto done;
    }
    c->state = OPEN;
    size_t used = end + 4 - c->head;
    if (used < c->head_len) {   /* frames right behind the head */
        unsigned char extra[HEAD_MAX];
        size_t k = c->head_len - used;
        memcpy(extra, c->head + used, k);
        free(c->head);
        c->head = NULL;
        feed(c, extra, k);
        return;
    }
done:
    free(c->head);
    c->head = NULL;
}

static int open_all(int concurrency)
{
    int started = 0, in_flight = 0, opened = 0;
    struct epoll_event events[256];
    while ((started < nconns || in_flight) && now() < deadline) {
        while (started < nconns && in_flight < concurrency)
            in_flight += start_connect(&conns[started++]);
        int count = epoll_wait(epfd, events, 256, 500);
        for (int i = 0; i < count; i++) {
            struct conn *c = events[i].data.ptr;
            if (c->state == OPEN) {   /* an open one: pings, or an early close */
                on_readable(c);
                continue;
            }
            on_opening_event(c);
            if (c->state == OPEN || c->state == CLOSED) {
                in_flight--;
                opened += c->state == OPEN;
            }
        }
    }
    for (int i = 0; i < started; i++)
        if (conns[i].state == CONNECTING || conns[i].state == HANDSHAKING)
            fail(&conns[i], E_TIMEOUT_OPENING, "deadline passed");
    return opened;
}

/* --- Running. */

static int stdin_line;   /* set when a line arrived on stdin */
static char stdin_buf[64];

static void loop(int until_stdin)
{
    struct epoll_event events[512];
    while (until_stdin ? !stdin_line : pending > 0) {
        double left = deadline - now();
        if (left <= 0)
            return;
        int count = epoll_wait(epfd, events, 512, left > 1 ? 1000 : (int)(left * 1000) + 1);
        for (int i = 0; i < count; i++) {
            struct conn *c = events[i].data.ptr;
            if (c == NULL) {
                ssize_t n = read(0, stdin_buf, sizeof stdin_buf - 1);
                stdin_buf[n > 0 ? n : 0] = 0;
                stdin_line = 1;
                continue;
            }
            if ((events[i].events & EPOLLOUT) && c->state == OPEN)
                flush(c);
            if ((events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && c->state == OPEN)
                on_readable(c);
        }
    }
}

static void round_trips(long count, double *start, double *end, double *cpu)
{
    double cpu_before = cpu_seconds();
    pending = 0;
    for (int i = 0; i < nconns; i++)
        if (conns[i].state == OPEN) {
            conns[i].remaining = count;
            pending++;
        }
    *start = now();
    for (int i = 0; i < nconns; i++)
        if (conns[i].state == OPEN)
            send_next(&conns[i]);
    loop(0);
    *end = now();
    *cpu = cpu_seconds() - cpu_before;
    for (int i = 0; i < nconns; i++)
        if (conns[i].state == OPEN && (conns[i].outstanding || conns[i].remaining))
            fail(&conns[i], E_TIMEOUT, "deadline passed");
}

static void print_errors(void)
{
    printf("\"errors\": {");
    for (int k = 0, n = 0; k < E_KINDS; k++)
        if (error_counts[k])
            printf("%s\"%s\": %ld", n++ ? ", " : "", error_names[k], error_counts[k]);
    printf("}, \"first_error\": {");
    for (int k = 0, n = 0; k < E_KINDS; k++)
        if (first_error[k][0]) {   /* the texts hold no quotes or backslashes */
            printf("%s\"%s\": \"", n++ ? ", " : "", error_names[k]);
            for (const char *p = first_error[k]; *p; p++)
                putchar(*p == '"' || *p == '\\' || (unsigned char)*p < 32 ? '?' : *p);
            putchar('"');
        }
    printf("}");
}

int main(int argc, char **argv)
{
    if (argc != 10) {
        fprintf(stderr, "usage: %s PORT RAW KIND SIZE CONNECTIONS MESSAGES WARMUP CONCURRENCY "
                        "TIMEOUT\n", argv[0]);
        return 2;
    }
    port = atoi(argv[1]);
    raw = atoi(argv[2]);
    opcode = strcmp(argv[3], "text") == 0 ? 1 : 2;
    payload_len = strtoul(argv[4], NULL, 10);
    nconns = atoi(argv[5]);
    long messages = atol(argv[6]), warmup = atol(argv[7]);
    int concurrency = atoi(argv[8]);
    deadline = now() + atof(argv[9]);

    struct rlimit nofile = { nconns + 256, nconns + 256 };
    struct rlimit current;
    getrlimit(RLIMIT_NOFILE, &current);
    if (current.rlim_cur < nofile.rlim_cur)
        setrlimit(RLIMIT_NOFILE, &nofile);

    unsigned char key_bytes[16];
    int urandom = open("/dev/urandom", O_RDONLY);
    payload = malloc(payload_len + 1);
    if (urandom < 0 || read(urandom, mask_key, 4) != 4 || read(urandom, key_bytes, 16) != 16)
        return 1;
    if (opcode == 1) {   /* printable ASCII, so any UTF-8 check passes */
        const char *text = "poex websocket echo benchmark ";
        for (size_t i = 0; i < payload_len; i++)
            payload[i] = text[i % 30];
    } else {
        for (size_t got = 0; got < payload_len;) {
            ssize_t n = read(urandom, payload + got, payload_len - got);
            if (n <= 0)
                return 1;
            got += n;
        }
    }
    close(urandom);
    frame = malloc(payload_len + 14);
    build_frame(frame, &frame_len, opcode, payload, payload_len);
    /* Sec-WebSocket-Key: 16 bytes in base64, the same for every connection. */
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char key[25];
    for (int i = 0, o = 0; i < 18; i += 3) {
        uint32_t v = key_bytes[i] << 16 | (i + 1 < 16 ? key_bytes[i + 1] << 8 : 0) |
                     (i + 2 < 16 ? key_bytes[i + 2] : 0);
        key[o++] = b64[v >> 18 & 63];
        key[o++] = b64[v >> 12 & 63];
        key[o++] = i + 1 < 16 ? b64[v >> 6 & 63] : '=';
        key[o++] = i + 2 < 16 ? b64[v & 63] : '=';
    }
    key[24] = 0;
    request_len = snprintf(request, sizeof request,
                           "GET /echo HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n", port, key);

    rbuf = malloc(RECV_SIZE);
    conns = calloc(nconns, sizeof *conns);
    latencies_cap = (size_t)nconns * messages;
    latencies = malloc(latencies_cap * sizeof *latencies + 1);
    epfd = epoll_create1(0);

    int opened = open_all(concurrency);
    double start, end, cpu;
    if (warmup)
        round_trips(warmup, &start, &end, &cpu);
    printf("ready {\"opened\": %d, ", opened);
    print_errors();
    printf("}\n");
    fflush(stdout);

    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
    epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev);
    loop(1);
    epoll_ctl(epfd, EPOLL_CTL_DEL, 0, NULL);
    if (strncmp(stdin_buf, "go", 2) != 0)
        return 1;
    recording = 1;
    round_trips(messages, &start, &end, &cpu);
    recording = 0;
    printf("done\n");
    fflush(stdout);

    unsigned char close_frame[8];
    size_t close_len;
    unsigned char code[2] = { 1000 >> 8, 1000 & 0xff };
    build_frame(close_frame, &close_len, 8, code, 2);
    for (int i = 0; i < nconns; i++)
        if (conns[i].state == OPEN) {
            if (!raw && conns[i].out_off >= frame_len && write(conns[i].fd, close_frame,
                                                              close_len) < 0) {
                /* gone already: nothing to tell it */
            }
            close(conns[i].fd);
        }

    printf("result {\"start\": %.9f, \"end\": %.9f, \"cpu\": %.6f, \"latencies\": [",
           start, end, cpu);
    for (size_t i = 0; i < nlatencies; i++)
        printf(i ? ",%.9f" : "%.9f", latencies[i]);
    printf("], ");
    print_errors();
    printf("}\n");
    fflush(stdout);
    return 0;
}
