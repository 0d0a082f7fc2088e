/* dirty MiB PAGES_PER_SECOND: keep MiB of memory and rewrite PAGES_PER_SECOND
 * 4 KiB pages every second (round-robin), for migration benchmarks. Runs until killed. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: dirty MiB PAGES_PER_SECOND\n");
        return 2;
    }
    long mib = atol(argv[1]);
    long rate = atol(argv[2]);
    if (mib <= 0 || rate < 0) {
        fprintf(stderr, "dirty: MiB must be > 0 and PAGES_PER_SECOND >= 0\n");
        return 2;
    }
    long pages = mib * 256;
    volatile unsigned char *mem = malloc((size_t)pages * 4096);
    if (!mem) {
        fprintf(stderr, "dirty: cannot allocate %ld MiB\n", mib);
        return 1;
    }
    for (long p = 0; p < pages; p++) mem[p * 4096] = (unsigned char)p;
    long next = 0, slice = 100; /* dirty in 10 ms slices */
    struct timespec ts = {0, 10 * 1000 * 1000};
    unsigned char v = 1;
    for (;;) {
        long per = rate / slice;
        for (long i = 0; i < per; i++) {
            mem[next * 4096 + (i % 8)] = v;
            next = (next + 1) % pages;
        }
        v++;
        nanosleep(&ts, NULL);
    }
}
