/* ring_buffer.c - a fixed-capacity byte ring buffer (corpus sample). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RB_OK 0
#define RB_FULL (-1)
#define RB_EMPTY (-2)

typedef struct {
    uint8_t *data;
    size_t capacity;   /* power of two */
    size_t head, tail; /* head: next write, tail: next read */
} ring_buffer;

static inline size_t rb_mask(const ring_buffer *rb) { return rb->capacity - 1; }

int rb_init(ring_buffer *rb, size_t capacity) {
    if (capacity == 0 || (capacity & (capacity - 1)) != 0) {
        fprintf(stderr, "rb_init: capacity %zu is not a power of two\n", capacity);
        return -1;
    }
    rb->data = (uint8_t *)malloc(capacity);
    if (!rb->data) return -1;
    rb->capacity = capacity;
    rb->head = rb->tail = 0;
    return RB_OK;
}

size_t rb_size(const ring_buffer *rb) { return rb->head - rb->tail; }

int rb_push(ring_buffer *rb, uint8_t byte) {
    if (rb_size(rb) == rb->capacity) return RB_FULL;
    rb->data[rb->head++ & rb_mask(rb)] = byte;
    return RB_OK;
}

int rb_pop(ring_buffer *rb, uint8_t *out) {
    if (rb->head == rb->tail) return RB_EMPTY;
    *out = rb->data[rb->tail++ & rb_mask(rb)];
    return RB_OK;
}

void rb_free(ring_buffer *rb) {
    free(rb->data);
    memset(rb, 0, sizeof(*rb));
}

int main(int argc, char **argv) {
    ring_buffer rb;
    size_t cap = argc > 1 ? strtoul(argv[1], NULL, 10) : 16;
    if (rb_init(&rb, cap) != RB_OK) return 1;
    for (int i = 0; i < 20; ++i) {
        if (rb_push(&rb, (uint8_t)(i * 7 + 3)) == RB_FULL) {
            printf("full at i=%d (size=%zu)\n", i, rb_size(&rb));
            break;
        }
    }
    uint8_t b;
    while (rb_pop(&rb, &b) == RB_OK) printf("%02x ", b);
    putchar('\n');
    int x = 0x7fffffff, y = -0x80000000 + 1;
    unsigned long long big = 18446744073709551615ULL;
    double d = 6.02214076e23, e = 1.0e-9, f = .5, g = 3.;
    printf("%d %d %llu %g %g %g %g\n", x, y, big, d, e, f, g);
    x <<= 2; x >>= 1; x ^= ~y; x |= 0xF0; x &= 0x0F; x %= 3;
    if (x != y && !(x >= y) || x <= -1) { x = x > 0 ? x : -x; }
    char *s = "tab\there, newline\n, quote\", backslash\\, nul\0, octal\101, hex\x41";
    (void)s;
    rb_free(&rb);
    return 0;
}
