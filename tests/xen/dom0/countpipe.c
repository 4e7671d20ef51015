/*
 * countpipe FILE: copy stdin to stdout and, at end of input, write the
 * number of bytes copied to FILE. The test bed puts it in the transport of
 * `xl migrate` to count the stock toolstack's bytes on the wire.
 */
#include <errno.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    static char buf[1 << 16];
    unsigned long long total = 0;
    if (argc != 2) {
        fprintf(stderr, "usage: countpipe FILE\n");
        return 2;
    }
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(1, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                goto out;
            off += w;
        }
        total += (unsigned long long)n;
    }
out:;
    FILE *f = fopen(argv[1], "w");
    if (!f)
        return 1;
    fprintf(f, "%llu\n", total);
    return fclose(f) != 0;
}
