/* Calibration target for ws_bench.py: a single-threaded epoll TCP echo.
 *
 * It speaks no WebSocket at all: every byte read is written back unchanged,
 * so the benchmark's client, in its raw mode, skips the handshake and expects
 * its own masked frames back. Nearly all the work per message is the
 * kernel's, which makes this the most the client can drive: a server whose
 * rate is well below it is measured, not the client.
 *
 *     cc -O2 -o raw_echo raw_echo.c && ./raw_echo PORT
 */
#define _GNU_SOURCE   /* accept4 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE (256 * 1024)
#define MAX_FDS 65536

/* Bytes read but not yet written back, per connection. */
struct pending { char *buf; size_t start, end; int writing; };
static struct pending conns[MAX_FDS];

static void drop(int ep, int fd)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    free(conns[fd].buf);
    conns[fd].buf = NULL;
}

/* Write back what is pending; returns 0 when all is out, 1 when blocked, -1 on error. */
static int flush(int fd)
{
    struct pending *p = &conns[fd];
    while (p->start < p->end) {
        ssize_t n = write(fd, p->buf + p->start, p->end - p->start);
        if (n < 0)
            return errno == EAGAIN ? 1 : -1;
        p->start += n;
    }
    p->start = p->end = 0;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    int one = 1;
    int lsock = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(lsock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[1])) };
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lsock, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lsock, 1024) < 0) {
        perror("listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = lsock };
    epoll_ctl(ep, EPOLL_CTL_ADD, lsock, &ev);
    struct epoll_event events[256];
    for (;;) {
        int count = epoll_wait(ep, events, 256, -1);
        for (int i = 0; i < count; i++) {
            int fd = events[i].data.fd;
            if (fd == lsock) {
                int c;
                while ((c = accept4(lsock, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (c >= MAX_FDS) { close(c); continue; }
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conns[c].buf = malloc(BUF_SIZE);
                    conns[c].start = conns[c].end = 0;
                    conns[c].writing = 0;
                    struct epoll_event cev = { .events = EPOLLIN, .data.fd = c };
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            struct pending *p = &conns[fd];
            int state = flush(fd);   /* EPOLLOUT, or leftovers from last time */
            while (state == 0) {
                ssize_t n = read(fd, p->buf, BUF_SIZE);
                if (n == 0 || (n < 0 && errno != EAGAIN)) { state = -1; break; }
                if (n < 0) break;
                p->end = n;
                state = flush(fd);
            }
            if (state < 0) {
                drop(ep, fd);
                continue;
            }
            /* While a write is blocked, wait to write and stop reading. */
            if (state != p->writing) {
                p->writing = state;
                struct epoll_event cev = { .events = state ? EPOLLOUT : EPOLLIN, .data.fd = fd };
                epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev);
            }
        }
    }
}
