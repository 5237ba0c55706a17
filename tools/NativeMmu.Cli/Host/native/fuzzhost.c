/*
 * fuzzhost: runs nativemmu fuzz programs on the real kernel, one real process per emulated process.
 *
 * Protocol (stdin/stdout, one line each, numbers in hex):
 *   at start it prints  "R s-e s-e ..." (its own mappings, which no operation may touch) and "K".
 *   per program it reads "P <processes>", operation lines
 *     "<kind> <proc> <label> <addrlabel> <addroff> <len> <prot> <flags> <advice> <width> <value> <child>"
 *   and "E"; it prints one line per operation ("o <result><state>", "s" skipped, "c <reason>" cut)
 *   and "D" at the end.
 * Kinds: 0 mmap 1 munmap 2 mprotect 3 madvise 4 load 5 store 6 tryload 7 trystore 8 read 9 write
 * 10 fork 11 exit. Addresses are label-relative: label 0 is absolute, label N is the address the
 * mmap that named itself mN returned (0 when it failed or was cut).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fcntl.h>

#define MAXP 16
#define MAXOPS 4096
#define MAXLABELS 8192
#define PAGE 4096ULL
#define TASK_SIZE 0x7ffffffff000ULL
#define CANONICAL_END 0x800000000000ULL
#define LOW_RESERVED 0x10000ULL /* the emulator's mmap_min_addr */
#define STACK_GUARD (256ULL * PAGE)

enum { K_MMAP, K_MUNMAP, K_MPROTECT, K_MADVISE, K_LOAD, K_STORE, K_TRYLOAD, K_TRYSTORE, K_READ, K_WRITE, K_FORK, K_EXIT, K_OBSERVE };

struct op {
    int kind, proc, label, alabel, prot, flags, advice, width, child;
    uint64_t aoff, len, value, addr;
};

static struct op ops[MAXOPS];
static int nops;
static uint64_t labels[MAXLABELS];
static struct { uint64_t s, e; } own[64], resv[64];
static int nown, nresv;
static int cmdfd[MAXP][2], respfd[MAXP][2];
static int live[MAXP];
static pid_t pids[MAXP];
static int myid;
static uint64_t base_rss, base_vm;

/* Every buffer a fuzz process writes is resident before the first fork (see main): a write to it is
 * then a COW copy, which leaves RssAnon as it was. */
#define MAXSPAN (64 << 10)
static char inbuf[1 << 16];
static char outbuf[(MAXSPAN * 2) + (1 << 17)];
static char procbuf[1 << 19];
static size_t outlen;

static void out(const char *s) { size_t n = strlen(s); memcpy(outbuf + outlen, s, n); outlen += n; }
static void outf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#include <stdarg.h>
static void outf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    outlen += vsnprintf(outbuf + outlen, sizeof outbuf - outlen, fmt, ap);
    va_end(ap);
}

static void writeall(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) { if (errno == EINTR) continue; _exit(3); }
        p += w; n -= (size_t)w;
    }
}

static size_t readfile(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, procbuf + n, sizeof procbuf - 1 - n);
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(fd);
    procbuf[n] = 0;
    return n;
}

static int is_own(uint64_t s, uint64_t e)
{
    for (int i = 0; i < nown; i++) if (s < own[i].e && own[i].s < e) return 1;
    return 0;
}

static int reserved(uint64_t s, uint64_t e)
{
    if (s < LOW_RESERVED) return 1;
    for (int i = 0; i < nresv; i++) if (s < resv[i].e && resv[i].s < e) return 1;
    return 0;
}

/* RssAnon and VmSize in kB from /proc/self/statm (size resident shared ...: anon = resident - shared). */
static void statm(uint64_t *rss, uint64_t *vm)
{
    readfile("/proc/self/statm");
    char *p = procbuf;
    uint64_t size = strtoull(p, &p, 10), resident = strtoull(p, &p, 10), shared = strtoull(p, &p, 10);
    *vm = size * 4;
    *rss = (resident - shared) * 4;
}

/* " rss=<kB> vm=<kB>[ maps=... thp=<AnonHugePages kB>]" of the calling process, the executor's own
 * mappings left out. */
static void state(int withmaps)
{
    uint64_t rss, vm;
    statm(&rss, &vm);
    outf(" rss=%lu vm=%lu", (unsigned long)(rss - base_rss), (unsigned long)(vm - base_vm));
    if (!withmaps) return;
    readfile("/proc/self/smaps");
    out(" maps=");
    int first = 1, keep = 0;
    unsigned long thp = 0;
    char *line = procbuf;
    while (*line) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        /* A VMA's header line starts with its start address in lower-case hex; every field line
         * ("Size:", "VmFlags:", ...) with an upper-case letter. No sscanf: this runs for every line of
         * every syscall's smaps. */
        if ((line[0] >= '0' && line[0] <= '9') || (line[0] >= 'a' && line[0] <= 'f')) {
            char *q;
            unsigned long s = strtoul(line, &q, 16), e = *q == '-' ? strtoul(q + 1, &q, 16) : 0;
            keep = *q == ' ' && s < TASK_SIZE && !is_own(s, e);
            if (keep) { outf("%s%lx-%lx:%.4s:", first ? "" : ",", s, e, q + 1); first = 0; }
        } else if (!keep) {
            /* a field of a VMA that is not shown */
        } else if (strncmp(line, "AnonHugePages:", 14) == 0) {
            thp += strtoul(line + 14, NULL, 10);
        } else if (strncmp(line, "VmFlags:", 8) == 0) {
            static const char *names[] = { "dc", "wf", "hg", "nh", "dd", "sr", "rr" };
            int any = 0;
            for (int i = 0; i < 7; i++) {
                char pat[5] = { ' ', names[i][0], names[i][1], 0 };
                char *q = strstr(line + 8, pat);
                if (q && (q[3] == ' ' || q[3] == 0)) { outf("%s%s", any ? "+" : "", names[i]); any = 1; }
            }
            if (!any) out("-");
            keep = 0;
        }
        if (!nl) break;
        line = nl + 1;
    }
    if (first) out("-");
    outf(" thp=%lu", thp);
}

static sigjmp_buf jb;
static volatile int fsig, fcode;
static volatile uint64_t faddr;

static void onfault(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    fsig = sig; fcode = si->si_code; faddr = (uint64_t)si->si_addr;
    siglongjmp(jb, 1);
}

static void fault_text(int withaddr, uint64_t addr)
{
    outf("sig=%d/%d", fsig, fcode);
    if (withaddr) {
        int64_t d = (int64_t)(faddr - addr);
        if (d < 0) outf("@-%lx", (unsigned long)-d); else outf("@+%lx", (unsigned long)d);
    }
}

static void child_loop(void);

static void run_op(struct op *o)
{
    outlen = 0;
    out("o ");
    int maps = 0;
    switch (o->kind) {
    case K_MMAP: {
        long r = syscall(SYS_mmap, o->addr, o->len, o->prot, MAP_PRIVATE | MAP_ANONYMOUS | o->flags, -1, 0);
        if (r < 0) outf("e=%d", errno); else outf("e=0 a=%lx", (unsigned long)r);
        maps = 1;
        break;
    }
    case K_MUNMAP: case K_MPROTECT: case K_MADVISE: {
        long r = o->kind == K_MUNMAP ? syscall(SYS_munmap, o->addr, o->len)
               : o->kind == K_MPROTECT ? syscall(SYS_mprotect, o->addr, o->len, o->prot)
               : syscall(SYS_madvise, o->addr, o->len, o->advice);
        outf("e=%d", r < 0 ? errno : 0);
        maps = 1;
        break;
    }
    case K_LOAD: case K_TRYLOAD: case K_STORE: case K_TRYSTORE: {
        int store = o->kind == K_STORE || o->kind == K_TRYSTORE;
        uint64_t v = 0;
        if (sigsetjmp(jb, 1) == 0) {
            uintptr_t a = (uintptr_t)o->addr;
            switch (o->width) {
            case 1: if (store) *(volatile uint8_t *)a = (uint8_t)o->value; else v = *(volatile uint8_t *)a; break;
            case 2: if (store) *(volatile uint16_t *)a = (uint16_t)o->value; else v = *(volatile uint16_t *)a; break;
            case 4: if (store) *(volatile uint32_t *)a = (uint32_t)o->value; else v = *(volatile uint32_t *)a; break;
            default: if (store) *(volatile uint64_t *)a = o->value; else v = *(volatile uint64_t *)a; break;
            }
            if (store) out("ok"); else outf("v=%lx", (unsigned long)v);
        } else {
            fault_text(o->kind == K_LOAD || o->kind == K_STORE, o->addr);
        }
        break;
    }
    case K_READ: case K_WRITE: {
        volatile unsigned char *a = (volatile unsigned char *)(uintptr_t)o->addr;
        if (sigsetjmp(jb, 1) == 0) {
            if (o->kind == K_WRITE) {
                for (uint64_t i = 0; i < o->len; i++) a[i] = (unsigned char)(o->value + i * 131);
                out("ok");
            } else {
                out("v=");
                static const char hex[] = "0123456789abcdef";
                for (uint64_t i = 0; i < o->len; i++) { unsigned char b = a[i]; outbuf[outlen++] = hex[b >> 4]; outbuf[outlen++] = hex[b & 15]; }
            }
        } else {
            if (o->kind == K_READ) outlen = 2;
            fault_text(1, o->addr);
        }
        break;
    }
    case K_FORK: {
        pid_t p = (pid_t)syscall(SYS_fork);
        if (p == 0) { myid = o->child; child_loop(); _exit(0); }
        if (p < 0) { outf("e=%d", errno); break; }
        outf("ok pid=%d", (int)p);
        maps = 1;
        break;
    }
    case K_EXIT:
        out("ok\n");
        writeall(respfd[myid][1], outbuf, outlen);
        _exit(0);
    case K_OBSERVE:
        outlen = 0;
        out("child:");
        maps = 1;
        break;
    }
    state(maps);
    out("\n");
    writeall(respfd[myid][1], outbuf, outlen);
}

static void child_loop(void)
{
    if (base_vm == 0) statm(&base_rss, &base_vm);
    for (;;) {
        struct op o;
        size_t got = 0;
        while (got < sizeof o) {
            ssize_t r = read(cmdfd[myid][0], (char *)&o + got, sizeof o - got);
            if (r <= 0) { if (r < 0 && errno == EINTR) continue; _exit(0); }
            got += (size_t)r;
        }
        run_op(&o);
    }
}

static size_t readline_fd(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r <= 0) { if (r < 0 && errno == EINTR) continue; break; }
        n += (size_t)r;
        if (buf[n - 1] == '\n') break;
    }
    buf[n] = 0;
    return n;
}

static uint64_t resolve(int label, uint64_t off) { return (label > 0 && label < MAXLABELS ? labels[label] : 0) + off; }

static const char *cut_reason(struct op *o)
{
    uint64_t a = o->addr;
    switch (o->kind) {
    case K_MMAP: {
        uint64_t alen = (o->len + PAGE - 1) & ~(PAGE - 1);
        if (o->len == 0 || alen == 0 || alen < o->len) return NULL;
        if (o->flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) {
            if (a & (PAGE - 1)) return NULL;
        } else {
            a &= ~(PAGE - 1);
            if (a == 0) return NULL;
            if (a > TASK_SIZE || alen > TASK_SIZE - a) return NULL;
        }
        if (a + alen < a) return NULL;
        return reserved(a, a + alen) ? "mmap range reaches the executor's own mappings or below 0x10000" : NULL;
    }
    case K_MUNMAP: case K_MPROTECT: case K_MADVISE: {
        uint64_t alen = (o->len + PAGE - 1) & ~(PAGE - 1);
        if (o->len == 0 || (a & (PAGE - 1)) || alen < o->len || a + alen < a) return NULL;
        return reserved(a, a + alen) ? "range reaches the executor's own mappings or below 0x10000" : NULL;
    }
    case K_LOAD: case K_STORE: case K_TRYLOAD: case K_TRYSTORE:
        return reserved(a, a + (uint64_t)o->width) ? "access reaches the executor's own mappings or below 0x10000" : NULL;
    case K_READ: case K_WRITE:
        if (o->len > MAXSPAN) return "span longer than the executor's 64 KiB";
        return reserved(a, a + o->len) ? "access reaches the executor's own mappings or below 0x10000" : NULL;
    }
    return NULL;
}

static void run_program(int nproc)
{
    memset(labels, 0, sizeof labels);
    memset(live, 0, sizeof live);
    for (int i = 0; i < nproc; i++) {
        pid_t p = fork();
        if (p == 0) { myid = i; base_vm = 0; child_loop(); _exit(0); }
        pids[i] = p;
        live[i] = 1;
    }
    static char line[1 << 21];
    for (int i = 0; i < nops; i++) {
        struct op *o = &ops[i];
        o->addr = resolve(o->alabel, o->aoff);
        if (o->proc >= MAXP || !live[o->proc]) { fputs("s\n", stdout); continue; }
        if (o->kind == K_FORK && (o->child >= MAXP || live[o->child] || pids[o->child] != 0)) { fputs("s\n", stdout); continue; }
        if (o->kind >= K_LOAD && o->kind <= K_WRITE) {
            uint64_t len = o->kind >= K_READ ? o->len : (uint64_t)o->width;
            if (o->addr >= CANONICAL_END || len > CANONICAL_END - o->addr) { fputs("s\n", stdout); continue; }
        }
        const char *why = cut_reason(o);
        if (why) {
            if (o->kind == K_MMAP && o->label > 0 && o->label < MAXLABELS) labels[o->label] = 0;
            printf("c %s\n", why);
            continue;
        }
        writeall(cmdfd[o->proc][1], (char *)o, sizeof *o);
        readline_fd(respfd[o->proc][0], line, sizeof line);
        if (line[0] == 0) { printf("c process p%d died\n", o->proc); live[o->proc] = 0; continue; }
        if (o->kind == K_MMAP && o->label > 0 && o->label < MAXLABELS) {
            char *a = strstr(line, " a=");
            labels[o->label] = a ? strtoull(a + 3, NULL, 16) : 0;
        }
        if (o->kind == K_EXIT) { live[o->proc] = 0; pids[o->proc] = -1; fputs(line, stdout); continue; }
        if (o->kind == K_FORK && strstr(line, "ok pid=")) {
            pids[o->child] = (pid_t)strtol(strstr(line, "pid=") + 4, NULL, 10);
            live[o->child] = 1;
            /* the pid is no observation: drop it */
            char *p = strstr(line, " pid=");
            char *q = p + 5;
            while (*q && *q != ' ') q++;
            memmove(p, q, strlen(q) + 1);
            size_t n = strlen(line);
            if (n && line[n - 1] == '\n') line[n - 1] = 0;
            static struct op obs;
            memset(&obs, 0, sizeof obs);
            obs.kind = K_OBSERVE;
            static char cl[1 << 16];
            writeall(cmdfd[o->child][1], (char *)&obs, sizeof obs);
            readline_fd(respfd[o->child][0], cl, sizeof cl);
            printf("%s %s", line, cl[0] ? cl : "child:dead\n");
            continue;
        }
        fputs(line, stdout);
    }
    for (int i = 0; i < MAXP; i++) if (live[i] && pids[i] > 0) kill(pids[i], SIGKILL);
    while (waitpid(-1, NULL, __WALL) > 0 || errno == EINTR) { }
    memset(pids, 0, sizeof pids);
    fputs("D\n", stdout);
    fflush(stdout);
}

/* The stack below main's frame, resident: called and returned from, so that every later call (a
 * fork chain nests one run_op per level) runs on pages already there. */
static __attribute__((noinline)) void pretouch_stack(void)
{
    volatile char deep[256 * 1024];
    for (size_t i = 0; i < sizeof deep; i += 4096) deep[i] = 1;
    deep[sizeof deep - 1] = 1;
}

int main(int argc, char **argv)
{
    (void)argc;
    int pers = personality(0xffffffff);
    if (pers != -1 && !(pers & ADDR_NO_RANDOMIZE)) {
        personality((unsigned long)pers | ADDR_NO_RANDOMIZE);
        execv("/proc/self/exe", argv);
    }
    /* Everything the processes touch is resident before the layout is read: no page of the
     * executor's own faults in later (the stack grows once, here; the buffers are touched). */
    pretouch_stack();
    memset(outbuf, 0, sizeof outbuf);
    memset(procbuf, 0, sizeof procbuf);
    memset(inbuf, 0, sizeof inbuf);
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    setvbuf(stdin, NULL, _IOFBF, 1 << 16);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    for (int i = 0; i < MAXP; i++) {
        if (pipe(cmdfd[i]) || pipe(respfd[i])) { perror("pipe"); return 2; }
    }
    /* Signal frames go on a resident alternate stack: delivering SIGSEGV never grows the real one. */
    static char altstack[1 << 16];
    memset(altstack, 0, sizeof altstack);
    stack_t ss = { .ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0 };
    sigaltstack(&ss, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = onfault;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    printf("probe\n"); /* stdio allocates its buffers before the layout is read */
    fflush(stdout);
    if (fgets(inbuf, sizeof inbuf, stdin) == NULL) return 0;

    readfile("/proc/self/maps");
    char *line = procbuf;
    printf("R");
    while (*line && nown < 64) {
        char *eol = strchr(line, '\n');
        if (eol) *eol = 0;
        unsigned long s, e;
        if (sscanf(line, "%lx-%lx", &s, &e) == 2) {
            own[nown].s = s; own[nown].e = e; nown++;
            if (s < TASK_SIZE) {
                printf(" %lx-%lx", s, e);
                /* An anonymous neighbour could merge with a fuzz mapping: keep a page free on each side
                 * (below the stack, its guard gap). The special mappings and the image never merge. */
                int anon = strstr(line, " 00:00 0") && !strstr(line, "[v");
                uint64_t lo = anon ? s - PAGE : s, hi = anon ? e + PAGE : e;
                if (strstr(line, "[stack]")) lo = s - STACK_GUARD - PAGE;
                resv[nresv].s = lo; resv[nresv].e = hi; nresv++;
            }
        }
        if (!eol) break;
        line = eol + 1;
    }
    printf("\nK\n");
    fflush(stdout);

    while (fgets(inbuf, sizeof inbuf, stdin)) {
        if (inbuf[0] != 'P') continue;
        int nproc = (int)strtol(inbuf + 2, NULL, 16);
        nops = 0;
        while (fgets(inbuf, sizeof inbuf, stdin) && inbuf[0] != 'E') {
            if (nops >= MAXOPS) continue;
            struct op *o = &ops[nops];
            memset(o, 0, sizeof *o);
            unsigned long v[12];
            if (sscanf(inbuf, "%lx %lx %lx %lx %lx %lx %lx %lx %lx %lx %lx %lx", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9], &v[10], &v[11]) != 12) continue;
            o->kind = (int)v[0]; o->proc = (int)v[1]; o->label = (int)v[2]; o->alabel = (int)v[3]; o->aoff = v[4]; o->len = v[5];
            o->prot = (int)v[6]; o->flags = (int)v[7]; o->advice = (int)v[8]; o->width = (int)v[9]; o->value = v[10]; o->child = (int)v[11];
            nops++;
        }
        run_program(nproc < 1 ? 1 : nproc > MAXP ? MAXP : nproc);
    }
    return 0;
}
