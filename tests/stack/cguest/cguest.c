/* cguest.c: a freestanding C program for tests/stack/test_c_guest.py, built with the host's
 * gcc (-m32) at several optimization levels into a flat binary loaded at 0x100000 (the
 * multiboot header lets qemu-system-i386 -kernel boot the same file). It exercises what
 * compiled code is made of (jump tables, calls through pointers, recursion, signed
 * division, 64-bit multiplies and shifts, bit scans, string copies, structures) and prints
 * what it computed on COM1; the test works out the same values in Python. No libgcc: the
 * 32-bit one is not installed everywhere, so no 64-bit division and no popcount. */

__asm__(".section .text.entry, \"ax\"\n"
        ".globl _start\n"
        "_start: jmp 1f\n"
        ".align 4\n"
        "mb: .long 0x1BADB002, 0x00010000, -(0x1BADB002 + 0x00010000)\n"
        "    .long mb, 0x100000, 0, 0, _start\n"
        "1:  mov $0x90000, %esp\n"
        "    call guest_main\n"
        "    mov $0x501, %dx\n"
        "    mov $0, %al\n"
        "    out %al, %dx\n"
        "2:  hlt\n"
        "    jmp 2b\n"
        ".text\n");

#define COM1 0x3F8

static inline void outb(unsigned short port, unsigned char v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline unsigned char inb(unsigned short port)
{
    unsigned char v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static void put_char(char c)
{
    while (!(inb(COM1 + 5) & 0x20))
        ;
    outb(COM1, (unsigned char)c);
}

static void put_str(const char *s)
{
    while (*s)
        put_char(*s++);
}

static void put_dec(int v)
{
    char b[12];
    int i = 11;
    unsigned u = v < 0 ? 0u - (unsigned)v : (unsigned)v;
    b[i] = 0;
    do {
        b[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        b[--i] = '-';
    put_str(b + i);
}

static void put_hex(unsigned v)
{
    for (int i = 28; i >= 0; i -= 4)
        put_char("0123456789abcdef"[(v >> i) & 15]);
}

static void label(const char *s)
{
    put_str(s);
    put_char(' ');
}

/* gcc may call these for copies and clears of its own. */
void *memcpy(void *d, const void *s, unsigned n)
{
    unsigned char *p = d;
    const unsigned char *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}

void *memset(void *d, int c, unsigned n)
{
    unsigned char *p = d;
    while (n--)
        *p++ = (unsigned char)c;
    return d;
}

static unsigned seed = 12345;

static unsigned next(void) /* a linear congruential generator */
{
    seed = seed * 1103515245u + 12345u;
    return seed;
}

static unsigned crc_table[256];

static unsigned crc32(const unsigned char *p, unsigned n)
{
    if (!crc_table[1])
        for (unsigned i = 0; i < 256; i++) {
            unsigned c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            crc_table[i] = c;
        }
    unsigned c = 0xFFFFFFFFu;
    while (n--)
        c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

struct item {
    int key;
    short weight;
    unsigned char tag;
};

static struct item items[40];
static unsigned char buf[4096], copy[4096];

static int fib(int n)
{
    return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

/* In unsigned arithmetic: a signed overflow would be undefined. */
static int op_add(int a, int b) { return (int)((unsigned)a + (unsigned)b); }
static int op_sub(int a, int b) { return (int)((unsigned)a - (unsigned)b); }
static int op_xor(int a, int b) { return a ^ b; }
static int op_mul(int a, int b) { return (int)((unsigned)a * (unsigned)b); }
static int (*const ops[4])(int, int) = {op_add, op_sub, op_xor, op_mul};

static int classify(unsigned v)
{
    switch (v % 9) { /* a jump table at -O2 */
    case 0: return 17;
    case 1: return -3;
    case 2: return 256;
    case 3: return 5;
    case 4: return 99;
    case 5: return -40;
    case 6: return 8;
    case 7: return 1000;
    default: return 0;
    }
}

void guest_main(void)
{
    for (unsigned i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)(next() >> 16);
    label("crc");
    put_hex(crc32(buf, sizeof buf));
    put_char('\n');

    memcpy(copy, buf + 3, 1000);
    memset(copy + 1000, 0x5A, 77);
    label("copy");
    put_hex(crc32(copy, 1077));
    put_char('\n');

    for (int i = 0; i < 40; i++) {
        items[i].key = (int)(next() >> 8) - (1 << 23);
        items[i].weight = (short)(next() >> 16);
        items[i].tag = (unsigned char)i;
    }
    for (int i = 1; i < 40; i++) { /* insertion sort by key, structures copied whole */
        struct item t = items[i];
        int j = i - 1;
        while (j >= 0 && items[j].key > t.key) {
            items[j + 1] = items[j];
            j--;
        }
        items[j + 1] = t;
    }
    label("sort");
    for (int i = 0; i < 40; i += 13) {
        put_dec(items[i].key);
        put_char(':');
        put_dec(items[i].weight);
        put_char(':');
        put_dec(items[i].tag);
        put_char(' ');
    }
    put_char('\n');

    label("div");
    for (int i = 0; i < 6; i++) {
        int a = (int)next(), b = (int)(next() >> 20) - 2048;
        if (b == 0)
            b = 7;
        put_dec(a / b);
        put_char(',');
        put_dec(a % b);
        put_char(',');
        put_dec(a >> (i + 3));
        put_char(' ');
    }
    put_char('\n');

    label("mul64");
    unsigned long long acc = 1;
    for (int i = 0; i < 5; i++) {
        unsigned hi = next(), lo = next(); /* (each next() a statement of its own: the
                                              order of a call's operands is unspecified) */
        unsigned long long m = (unsigned long long)hi << 32 | lo;
        acc = acc * m + (acc >> 17) + (unsigned long long)((long long)(int)next() * 128);
    }
    put_hex((unsigned)(acc >> 32));
    put_hex((unsigned)acc);
    put_char('\n');

    label("bits");
    for (int i = 0; i < 5; i++) {
        unsigned v = next() | 1u << (i * 7);
        put_dec(__builtin_ctz(v));
        put_char(',');
        put_dec(__builtin_clz(v));
        put_char(' ');
    }
    put_char('\n');

    label("calls");
    int x = 7;
    for (int i = 0; i < 12; i++) {
        unsigned k = next() >> 30;
        int y = (int)(next() >> 24);
        x = ops[k](x, y);
    }
    put_dec(x);
    put_char(' ');
    put_dec(fib(20));
    put_char(' ');
    int s = 0;
    for (unsigned i = 0; i < 50; i++)
        s += classify(next());
    put_dec(s);
    put_char('\n');
}
