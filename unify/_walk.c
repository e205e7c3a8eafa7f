/* The traversal's inner loop, compiled: breadth-first walks over the GraphIndex's CSR arrays.
 *
 * `traversal.reach` and `traversal.reach_many` stay the reference; this module gives the same
 * rows faster: numpy pays a Python round per level, so it batches up to 4096 starts into bit
 * sets and sorts what each level finds; here a level costs nothing, and the work is bounded by
 * memory latency. With vias, a plain walk per start; without (most lateral queries: rows of
 * (start, node, depth) only), 64 starts at once, a bit each, so a node reached by several of
 * them is expanded once per level. One function:
 *
 *   walk(indptr, nbr, edge, sa_indptr, sa_nbr, sa_edge, stop, report, node_created,
 *        edge_created, has_same_as, as_of, starts, depth, same_as, vias, union[, counting])
 *     -> (start, node, depth, via): four bytearrays of int64, or None
 *     -> with counting=1 (vias=0, union=0): one bytearray of int64, the rows of each start
 *        (`traversal.count_each`, for a query that only counts them); no row is kept
 *
 * - indptr/nbr/edge: the lineage CSR to follow (forward or backward); sa_*: the same_as CSR,
 *   followed at no cost in depth, from the nodes has_same_as (bool per node) marks. indptr
 *   int64; nbr and edge int32 or int64.
 * - stop, report: bool per node or None; node_created (int64 per node) and edge_created (int64
 *   per edge row) are read only when as_of is not None.
 * - starts: int64 dense ids; ids that are not nodes (or did not exist as_of) reach nothing.
 * - depth: lineage hops, -1 for no limit. vias=0 leaves via at -1.
 * - union=0: a walk per start, rows by start (its position in starts), depth, node.
 *   union=1: one walk from all starts together (`reach`), rows by depth, node; start is 0.
 * None means "not handled here" (an array of another type): the numpy path runs instead.
 *
 * Why the rows match the numpy walk: numpy visits a level's frontier in node order and each
 * node's entries in CSR order, and the first entry to reach a node is its via. Frontier nodes'
 * CSR slices are in node order, so "first met" is "lowest CSR position": this walk keeps, for
 * each node reached in a step, the lowest position that reached it, and needs no sorted
 * frontier. Only the rows of a level are sorted, by node, as numpy emits them.
 *
 * The arrays come from our own index, but a bad array must not crash the process: every
 * offset and id read from them is checked, and a bad one raises ValueError naming the array
 * and position. The loop runs without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct {
    Py_buffer view;
    const char *name;
    int held;
    Py_ssize_t len; /* items */
    int size;       /* 1 (bool), 4 or 8 bytes */
} Arr;

static inline int64_t at(const Arr *a, int64_t i) {
    if (a->size == 8) return ((const int64_t *)a->view.buf)[i];
    if (a->size == 4) return ((const int32_t *)a->view.buf)[i];
    return ((const uint8_t *)a->view.buf)[i];
}

/* A 1-d C-contiguous buffer of the given kind: 'i' signed ints of 4 or 8 bytes, 'q' int64
 * only, '?' bool. 1: got it; 0: another type (the caller returns None); -1: error set. */
static int get_arr(PyObject *obj, Arr *a, const char *name, char kind) {
    a->name = name;
    a->held = 0;
    if (PyObject_GetBuffer(obj, &a->view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyErr_Clear();
        return 0;
    }
    a->held = 1;
    const char *f = a->view.format ? a->view.format : "B";
    if (*f == '<' || *f == '=' || *f == '@') f++;
    int ok;
    if (kind == '?')
        ok = a->view.itemsize == 1 && (strcmp(f, "?") == 0);
    else if (kind == 'q')
        ok = a->view.itemsize == 8 && (strcmp(f, "q") == 0 || strcmp(f, "l") == 0);
    else
        ok = (a->view.itemsize == 8 && (strcmp(f, "q") == 0 || strcmp(f, "l") == 0)) ||
             (a->view.itemsize == 4 && (strcmp(f, "i") == 0 || (strcmp(f, "l") == 0 && sizeof(long) == 4)));
    if (!ok || a->view.ndim > 1) return 0;
    a->size = (int)a->view.itemsize;
    a->len = a->view.len / a->view.itemsize;
    return 1;
}

static void release(Arr *a) {
    if (a->held) PyBuffer_Release(&a->view);
    a->held = 0;
}

/* -- growable int64 lists ---------------------------------------------------------------- */

typedef struct {
    int64_t *v;
    size_t n, cap;
} List;

static inline int push(List *l, int64_t x) {
    if (__builtin_expect(l->n == l->cap, 0)) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        int64_t *grown = realloc(l->v, cap * sizeof(int64_t));
        if (!grown) return -1;
        l->v = grown;
        l->cap = cap;
    }
    l->v[l->n++] = x;
    return 0;
}

static int reserve(List *l, size_t more) {
    if (l->n + more <= l->cap) return 0;
    size_t cap = l->cap ? l->cap : 256;
    while (cap < l->n + more) cap *= 2;
    int64_t *grown = realloc(l->v, cap * sizeof(int64_t));
    if (!grown) return -1;
    l->v = grown;
    l->cap = cap;
    return 0;
}

/* Sort non-negative ids below 2**bits: insertion for a few, else LSD radix by bytes. */
static int sort_ids(int64_t *v, size_t n, int bits, List *tmp) {
    if (n < 48) {
        for (size_t i = 1; i < n; i++) {
            int64_t x = v[i];
            size_t j = i;
            while (j > 0 && v[j - 1] > x) {
                v[j] = v[j - 1];
                j--;
            }
            v[j] = x;
        }
        return 0;
    }
    tmp->n = 0;
    if (reserve(tmp, n) < 0) return -1;
    int64_t *a = v, *b = tmp->v;
    size_t count[256];
    for (int shift = 0; shift < bits; shift += 8) {
        memset(count, 0, sizeof count);
        for (size_t i = 0; i < n; i++) count[(a[i] >> shift) & 255]++;
        size_t sum = 0;
        for (int d = 0; d < 256; d++) {
            size_t c = count[d];
            count[d] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; i++) b[count[(a[i] >> shift) & 255]++] = a[i];
        int64_t *t = a;
        a = b;
        b = t;
    }
    if (a != v) memcpy(v, a, n * sizeof(int64_t));
    return 0;
}

/* -- the walk ------------------------------------------------------------------------------ */

enum { OK = 0, NOMEM = 1, BAD = 2 };

typedef struct {
    const Arr *indptr, *nbr, *edge;
} Csr;

typedef struct {
    int64_t n;
    Csr lin, sa;
    const Arr *stop, *report, *node_created, *edge_created, *twins;
    int timed;
    int64_t as_of;
    int vias, same_as;
    /* Two words per node, side by side (one cache miss for both), SEEN and POS/STEP_BITS below.
     * A walk per start: SEEN(v) is the step counter when v was reached (v is visited by the
     * current walk when >= base, reached by the current step when == the step's counter; never
     * cleared), POS(v) the lowest CSR position reaching v in its step, then its via. The
     * 64-start walks: SEEN(v) the bits of the starts that reached v, STEP_BITS(v) those it
     * gained in the current step; level_bits[v] those a reported v gained in the level. */
    uint64_t *seen;
    uint64_t counter, base;
    uint64_t *level_bits;
    int64_t *counts; /* counting only: rows per start (by position in starts), no rows kept */
    List out_start, out_node, out_depth, out_via, level, tmp;
    List cand_v, cand_p, cand_b; /* a step's entries: neighbour, CSR position, bits */
    /* what went wrong, for the error message */
    const char *bad_array;
    int64_t bad_at, bad_value;
} Walk;

#define SEEN(w, v) ((w)->seen[(v) * 2])
#define POS(w, v) (*(int64_t *)&(w)->seen[(v) * 2 + 1])
#define STEP_BITS(w, v) ((w)->seen[(v) * 2 + 1])  /* bits gained in the current step (0 outside) */
#define LEVEL_BITS(w, v) ((w)->level_bits[v]) /* bits gained in the current level, if reported */

static int bad(Walk *w, const Arr *a, int64_t i, int64_t value) {
    w->bad_array = a->name;
    w->bad_at = i;
    w->bad_value = value;
    return BAD;
}

static inline int expandable(const Walk *w, int64_t v) { return !w->stop || !at(w->stop, v); }

static inline int has_twin(const Walk *w, int64_t v) {
    /* a byte per node (the index's has_same_as): cache-friendlier than the same_as offsets */
    return ((const uint8_t *)w->twins->view.buf)[v];
}

/* Memory latency is the walk's cost (its arrays exceed the caches), so a step is two passes
 * that each ask for memory well before they read it: `gather` lists the frontier's entries
 * (asking for the offsets of the node PF ahead and the entries of the one PF/4 ahead), then
 * the step goes through the list asking for the seen word of the entry PF ahead. Every
 * offset and id is checked as it is read; the hints are only for memory already checked or
 * in bounds. */
#define PF 16
/* starts from which two threads walk (half each): below, a thread costs more than it saves */
#define PARALLEL_STARTS 512

static int gather(Walk *w, const Csr *csr, const List *from, const List *fbits) {
    int64_t entries = csr->nbr->len < csr->edge->len ? csr->nbr->len : csr->edge->len;
    const char *indptr = csr->indptr->view.buf, *nbr = csr->nbr->view.buf;
    w->cand_v.n = w->cand_p.n = w->cand_b.n = 0;
    for (size_t k = 0; k < from->n; k++) {
        if (k + PF < from->n) __builtin_prefetch(indptr + from->v[k + PF] * 8); /* ids < n: in bounds */
        if (k + PF / 4 < from->n) {
            int64_t ahead = at(csr->indptr, from->v[k + PF / 4]);
            if (ahead >= 0 && ahead < entries) __builtin_prefetch(nbr + ahead * csr->nbr->size);
        }
        int64_t f = from->v[k];
        int64_t lo = at(csr->indptr, f), hi = at(csr->indptr, f + 1);
        if (lo < 0 || lo > hi) return bad(w, csr->indptr, f, lo);
        if (hi > entries) return bad(w, csr->indptr, f + 1, hi);
        size_t m = (size_t)(hi - lo);
        if (reserve(&w->cand_v, m) || reserve(&w->cand_p, m) || (fbits && reserve(&w->cand_b, m))) return NOMEM;
        for (int64_t p = lo; p < hi; p++) {
            int64_t v = at(csr->nbr, p);
            if (v < 0 || v >= w->n) return bad(w, csr->nbr, p, v);
            w->cand_v.v[w->cand_v.n++] = v;
            w->cand_p.v[w->cand_p.n++] = p;
            if (fbits) w->cand_b.v[w->cand_b.n++] = fbits->v[k];
        }
    }
    return OK;
}

/* Whether the entry at p to v is filtered out by as_of (1), kept (0), or bad (BAD). */
static inline int too_new(Walk *w, const Csr *csr, int64_t p, int64_t v) {
    if (!w->timed) return 0;
    int64_t e = at(csr->edge, p);
    if (e < 0 || e >= w->edge_created->len) return bad(w, csr->edge, p, e);
    return at(w->node_created, v) > w->as_of || at(w->edge_created, e) > w->as_of;
}

/* One hop from `from` over `csr`: the nodes not yet visited go to `to`, each with the lowest
 * CSR position that reached it (then turned into its edge row) in POS. */
static int step(Walk *w, const Csr *csr, const List *from, List *to) {
    uint64_t now = ++w->counter;
    int rc = gather(w, csr, from, NULL);
    if (rc) return rc;
    to->n = 0;
    const int64_t *cv = w->cand_v.v, *cp = w->cand_p.v;
    size_t n = w->cand_v.n;
    for (size_t i = 0; i < n; i++) {
        if (i + PF < n) __builtin_prefetch(&SEEN(w, cv[i + PF]));
        int64_t v = cv[i], p = cp[i];
        uint64_t t = SEEN(w, v);
        if (t >= w->base && t != now) continue; /* visited before this step */
        int old = too_new(w, csr, p, v);
        if (old) {
            if (old == BAD) return BAD;
            continue;
        }
        if (t == now) {
            if (p < POS(w, v)) POS(w, v) = p;
            continue;
        }
        SEEN(w, v) = now;
        POS(w, v) = p;
        if (push(to, v) < 0) return NOMEM;
    }
    for (size_t k = 0; k < to->n; k++) {
        int64_t v = to->v[k];
        POS(w, v) = w->vias ? at(csr->edge, POS(w, v)) : -1;
    }
    return OK;
}

/* Rows of a step's nodes that are reported go to the level; the expandable ones to `next`. */
static int collect(Walk *w, const List *found, List *next) {
    for (size_t k = 0; k < found->n; k++) {
        int64_t v = found->v[k];
        if ((!w->report || at(w->report, v)) && push(&w->level, v) < 0) return NOMEM;
        if (expandable(w, v) && push(next, v) < 0) return NOMEM;
    }
    return OK;
}

/* The same_as closure of the expandable nodes of `seeds` (already in `next`), at `depth`. */
static int identities(Walk *w, const List *seeds, List *next, List *a, List *b) {
    a->n = 0;
    for (size_t k = 0; k < seeds->n; k++) {
        int64_t v = seeds->v[k];
        if (expandable(w, v) && has_twin(w, v) && push(a, v) < 0) return NOMEM;
    }
    while (a->n) {
        int rc = step(w, &w->sa, a, b);
        if (rc) return rc;
        size_t before = next->n;
        if ((rc = collect(w, b, next))) return rc;
        a->n = 0;
        for (size_t k = before; k < next->n; k++)
            if (has_twin(w, next->v[k]) && push(a, next->v[k]) < 0) return NOMEM;
    }
    return OK;
}

static int emit_level(Walk *w, int64_t start, int64_t depth, int bits) {
    List *l = &w->level;
    if (!l->n) return OK;
    if (sort_ids(l->v, l->n, bits, &w->tmp) < 0) return NOMEM;
    if (reserve(&w->out_start, l->n) || reserve(&w->out_node, l->n) || reserve(&w->out_depth, l->n) ||
        reserve(&w->out_via, l->n))
        return NOMEM;
    for (size_t k = 0; k < l->n; k++) {
        int64_t v = l->v[k];
        w->out_start.v[w->out_start.n++] = start;
        w->out_node.v[w->out_node.n++] = v;
        w->out_depth.v[w->out_depth.n++] = depth;
        w->out_via.v[w->out_via.n++] = POS(w, v);
    }
    l->n = 0;
    return OK;
}

/* One walk from starts[lo:hi] together, its rows tagged `tag`. */
static int walk_from(Walk *w, const Arr *starts, int64_t lo, int64_t hi, int64_t tag, int64_t depth,
                     List *frontier, List *found, List *next, List *a, List *b, int bits) {
    w->base = ++w->counter;
    frontier->n = 0;
    for (int64_t i = lo; i < hi; i++) {
        int64_t s = at(starts, i);
        if (s < 0 || s >= w->n) continue; /* not a node: reaches nothing */
        if (w->timed && at(w->node_created, s) > w->as_of) continue;
        if (SEEN(w, s) == w->base) continue;
        SEEN(w, s) = w->base;
        if (push(frontier, s) < 0) return NOMEM;
    }
    if (!frontier->n) return OK;
    int rc;
    /* depth 0: the starts' twins; a start is walked from even when stop_at matches it */
    if (w->same_as && (rc = identities(w, frontier, frontier, a, b))) return rc;
    if ((rc = emit_level(w, tag, 0, bits))) return rc;
    for (int64_t level = 1; frontier->n && (depth < 0 || level <= depth); level++) {
        if ((rc = step(w, &w->lin, frontier, found))) return rc;
        next->n = 0;
        if ((rc = collect(w, found, next))) return rc;
        if (w->same_as && (rc = identities(w, found, next, a, b))) return rc;
        if ((rc = emit_level(w, tag, level, bits))) return rc;
        List t = *frontier;
        *frontier = *next;
        *next = t;
    }
    return OK;
}

/* -- walks of 64 starts at once, without vias -----------------------------------------------
 *
 * Without vias a row is only (start, node, depth), which does not depend on the order the
 * entries are met in, so a batch of 64 starts is walked as one search whose nodes carry a bit
 * per start (as `_BitSearch` does): a node reached by many starts of the batch is expanded
 * once per level, not once per start. w->seen holds each node's bits reached so far. */

typedef struct {
    int64_t lo;           /* the batch's first start (a position in starts) */
    List touched;         /* nodes with seen bits, cleared after the batch */
    List level_nodes;
    List bucket_node[64], bucket_depth[64];
} Bits;

/* One hop from (from, fbits) over csr: nodes gaining bits go to (to, tbits). */
static int bit_step(Walk *w, Bits *k, const Csr *csr, const List *from, const List *fbits, List *to, List *tbits) {
    int rc = gather(w, csr, from, fbits);
    if (rc) return rc;
    to->n = tbits->n = 0;
    const int64_t *cv = w->cand_v.v, *cp = w->cand_p.v, *cb = w->cand_b.v;
    size_t n = w->cand_v.n;
    for (size_t i = 0; i < n; i++) {
        if (i + PF < n) __builtin_prefetch(&SEEN(w, cv[i + PF]));
        int64_t v = cv[i];
        uint64_t c = (uint64_t)cb[i] & ~SEEN(w, v);
        if (!c) continue;
        int old = too_new(w, csr, cp[i], v);
        if (old) {
            if (old == BAD) return BAD;
            continue;
        }
        if (!SEEN(w, v) && push(&k->touched, v) < 0) return NOMEM;
        if (!STEP_BITS(w, v) && push(to, v) < 0) return NOMEM;
        STEP_BITS(w, v) |= c;
        SEEN(w, v) |= c;
    }
    if (reserve(tbits, to->n) < 0) return NOMEM;
    for (size_t i = 0; i < to->n; i++) {
        int64_t v = to->v[i];
        tbits->v[tbits->n++] = (int64_t)STEP_BITS(w, v);
        STEP_BITS(w, v) = 0;
    }
    return OK;
}

/* A step's nodes: reported ones into the level, expandable ones into (next, nbits). */
static int bit_collect(Walk *w, Bits *k, const List *found, const List *fbits, List *next, List *nbits) {
    for (size_t i = 0; i < found->n; i++) {
        int64_t v = found->v[i];
        if (w->counts && (!w->report || at(w->report, v))) {
            /* each (start, node) is gained once, in one step: a row of that start */
            for (uint64_t b = (uint64_t)fbits->v[i]; b; b &= b - 1) w->counts[k->lo + __builtin_ctzll(b)]++;
        } else if (!w->report || at(w->report, v)) {
            if (!LEVEL_BITS(w, v) && push(&k->level_nodes, v) < 0) return NOMEM;
            LEVEL_BITS(w, v) |= (uint64_t)fbits->v[i];
        }
        if (expandable(w, v) && (push(next, v) < 0 || push(nbits, fbits->v[i]) < 0)) return NOMEM;
    }
    return OK;
}

static int bit_identities(Walk *w, Bits *k, const List *seeds, const List *sbits, List *next, List *nbits,
                          List *a, List *ab, List *b, List *bb) {
    a->n = ab->n = 0;
    for (size_t i = 0; i < seeds->n; i++) {
        int64_t v = seeds->v[i];
        if (expandable(w, v) && has_twin(w, v) && (push(a, v) < 0 || push(ab, sbits->v[i]) < 0)) return NOMEM;
    }
    while (a->n) {
        int rc = bit_step(w, k, &w->sa, a, ab, b, bb);
        if (rc) return rc;
        size_t before = next->n;
        if ((rc = bit_collect(w, k, b, bb, next, nbits))) return rc;
        a->n = ab->n = 0;
        for (size_t i = before; i < next->n; i++)
            if (has_twin(w, next->v[i]) && (push(a, next->v[i]) < 0 || push(ab, nbits->v[i]) < 0)) return NOMEM;
    }
    return OK;
}

/* The level's rows into each start's bucket, in node order. */
static int bit_emit(Walk *w, Bits *k, int64_t depth, int nbits) {
    List *l = &k->level_nodes;
    if (sort_ids(l->v, l->n, nbits, &w->tmp) < 0) return NOMEM;
    for (size_t i = 0; i < l->n; i++) {
        int64_t v = l->v[i];
        uint64_t b = LEVEL_BITS(w, v);
        LEVEL_BITS(w, v) = 0;
        while (b) {
            int s = __builtin_ctzll(b);
            b &= b - 1;
            if (push(&k->bucket_node[s], v) < 0 || push(&k->bucket_depth[s], depth) < 0) return NOMEM;
        }
    }
    l->n = 0;
    return OK;
}

/* starts[lo:lo + count] (count <= 64) walked as one search. */
static int bit_walk(Walk *w, Bits *k, const Arr *starts, int64_t lo, int count, int64_t depth, int nbits,
                    List *fr, List *fb, List *found, List *fdb, List *next, List *nb, List *a, List *ab, List *b,
                    List *bb) {
    fr->n = fb->n = 0;
    k->lo = lo;
    for (int i = 0; i < count; i++) {
        int64_t s = at(starts, lo + i);
        if (s < 0 || s >= w->n) continue;
        if (w->timed && at(w->node_created, s) > w->as_of) continue;
        if (!SEEN(w, s) && push(&k->touched, s) < 0) return NOMEM;
        SEEN(w, s) |= (uint64_t)1 << i;
        if (push(fr, s) < 0 || push(fb, (int64_t)((uint64_t)1 << i)) < 0) return NOMEM;
    }
    int rc = OK;
    if (fr->n) {
        /* a start is walked from even when stop_at matches it */
        if (w->same_as && (rc = bit_identities(w, k, fr, fb, fr, fb, a, ab, b, bb))) return rc;
        if ((rc = bit_emit(w, k, 0, nbits))) return rc;
        for (int64_t level = 1; fr->n && (depth < 0 || level <= depth); level++) {
            if ((rc = bit_step(w, k, &w->lin, fr, fb, found, fdb))) return rc;
            next->n = nb->n = 0;
            if ((rc = bit_collect(w, k, found, fdb, next, nb))) return rc;
            if (w->same_as && (rc = bit_identities(w, k, found, fdb, next, nb, a, ab, b, bb))) return rc;
            if ((rc = bit_emit(w, k, level, nbits))) return rc;
            List t = *fr;
            *fr = *next;
            *next = t;
            t = *fb;
            *fb = *nb;
            *nb = t;
        }
    }
    for (size_t i = 0; i < k->touched.n; i++) SEEN(w, k->touched.v[i]) = 0;
    k->touched.n = 0;
    for (int s = 0; s < count; s++) {
        List *bn = &k->bucket_node[s], *bd = &k->bucket_depth[s];
        size_t m = bn->n;
        if (reserve(&w->out_start, m) || reserve(&w->out_node, m) || reserve(&w->out_depth, m) ||
            reserve(&w->out_via, m))
            return NOMEM;
        for (size_t i = 0; i < m; i++) w->out_start.v[w->out_start.n++] = lo + s;
        memcpy(w->out_node.v + w->out_node.n, bn->v, m * sizeof(int64_t));
        memcpy(w->out_depth.v + w->out_depth.n, bd->v, m * sizeof(int64_t));
        for (size_t i = 0; i < m; i++) w->out_via.v[w->out_via.n++] = -1;
        w->out_node.n += m;
        w->out_depth.n += m;
        bn->n = bd->n = 0;
    }
    return OK;
}

static int bit_walks(Walk *w, const Arr *starts, int64_t from, int64_t to, int64_t depth, int nbits) {
    Bits k;
    memset(&k, 0, sizeof k);
    List l[12];
    memset(l, 0, sizeof l);
    int rc = OK;
    for (int64_t lo = from; lo < to && !rc; lo += 64) {
        int count = to - lo < 64 ? (int)(to - lo) : 64;
        rc = bit_walk(w, &k, starts, lo, count, depth, nbits, &l[0], &l[1], &l[2], &l[3], &l[4], &l[5], &l[6],
                      &l[7], &l[8], &l[9]);
    }
    free(k.touched.v);
    free(k.level_nodes.v);
    for (int s = 0; s < 64; s++) free(k.bucket_node[s].v), free(k.bucket_depth[s].v);
    for (int i = 0; i < 12; i++) free(l[i].v);
    return rc;
}

/* -- the walks of a range of starts, on a thread of their own ---------------------------------
 *
 * Walks of different starts share nothing but the read-only arrays, so the starts are split
 * in two ranges (at a 64-start boundary) walked side by side when the machine has two cores
 * and there is enough work; the second range's rows are appended to the first's, which keeps
 * them by start. */

typedef struct {
    Walk w;
    const Arr *starts;
    int64_t lo, hi, depth;
    int bits, bitwise, rc;
} Job;

static void *run_job(void *arg) {
    Job *j = arg;
    Walk *w = &j->w;
    List frontier = {0}, found = {0}, next = {0}, a = {0}, b = {0};
    if (j->bitwise)
        j->rc = bit_walks(w, j->starts, j->lo, j->hi, j->depth, j->bits);
    else
        for (int64_t i = j->lo; i < j->hi && !j->rc; i++)
            j->rc = walk_from(w, j->starts, i, i + 1, i, j->depth, &frontier, &found, &next, &a, &b, j->bits);
    free(frontier.v), free(found.v), free(next.v), free(a.v), free(b.v), free(w->level.v), free(w->tmp.v);
    free(w->cand_v.v), free(w->cand_p.v), free(w->cand_b.v);
    w->level.v = w->tmp.v = w->cand_v.v = w->cand_p.v = w->cand_b.v = NULL;
    return NULL;
}

static int append(List *to, const List *from) {
    if (reserve(to, from->n) < 0) return NOMEM;
    if (from->n) memcpy(to->v + to->n, from->v, from->n * sizeof(int64_t));
    to->n += from->n;
    return OK;
}

/* The per-node words of the last 64-start walks (one set per thread), all zero again: the next
 * call of the same size reuses them rather than fault in fresh zero pages (thousands per million
 * nodes). Taken and given back with the GIL held, so two walks never share them; a walk that
 * failed frees its words instead (they may not be zero). */
/* Per-node words are read at random, one node's pair per cache miss: on huge pages (where the
 * kernel gives them on request) those misses stop also missing the TLB. Zero-filled. */
static uint64_t *words_alloc(size_t words) {
    size_t bytes = words * sizeof(uint64_t);
    if (!bytes) return NULL;
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE); /* a hint: without it, the words are on small pages */
#endif
    return p;
}

static void words_free(uint64_t *p, size_t words) {
    if (p) munmap(p, words * sizeof(uint64_t));
}

static uint64_t *spare[2];
static size_t spare_words[2];

static uint64_t *take_spare(int i, size_t words) {
    uint64_t *got = spare[i] && spare_words[i] == words ? spare[i] : NULL;
    if (got) spare[i] = NULL;
    return got;
}

static void give_spare(int i, uint64_t *words, size_t n) {
    words_free(spare[i], spare_words[i]);
    spare[i] = words;
    spare_words[i] = n;
}

static PyObject *as_bytes(const List *l) {
    PyObject *out = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(l->n * sizeof(int64_t)));
    if (out && l->n) memcpy(PyByteArray_AS_STRING(out), l->v, l->n * sizeof(int64_t));
    return out;
}

static PyObject *walk(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o[13] = {0};
    PyObject *as_of_obj;
    long long depth;
    int same_as, vias, unite, counting = 0;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOOOLppp|p", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], &o[7],
                          &o[8], &o[9], &o[12], &as_of_obj, &o[11], &depth, &same_as, &vias, &unite, &counting))
        return NULL;
    if (counting && (vias || unite)) {
        PyErr_SetString(PyExc_ValueError, "walk: counting rows per start walks each start without vias");
        return NULL;
    }
    static const char *names[] = {"indptr", "nbr", "edge", "same_as indptr", "same_as nbr", "same_as edge",
                                  "stop", "report", "node_created", "edge_created", "", "starts", "has_same_as"};
    static const char kinds[] = {'q', 'i', 'i', 'q', 'i', 'i', '?', '?', 'q', 'q', 0, 'q', '?'};
    Arr arr[13];
    memset(arr, 0, sizeof arr);
    Walk w;
    memset(&w, 0, sizeof w);
    PyObject *result = NULL;
    int handled = 1;
    w.timed = as_of_obj != Py_None;
    if (w.timed) {
        w.as_of = PyLong_AsLongLong(as_of_obj);
        if (w.as_of == -1 && PyErr_Occurred()) return NULL;
    }
    for (int i = 0; i < 13 && handled; i++) {
        if (i == 10) continue;
        if (o[i] == Py_None && (i == 6 || i == 7 || ((i == 8 || i == 9) && !w.timed))) continue;
        int got = get_arr(o[i], &arr[i], names[i], kinds[i]);
        if (got < 0) goto done;
        if (got == 0) handled = 0;
    }
    if (!handled) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    w.n = arr[0].len - 1;
    if (w.n < 0 || arr[3].len != w.n + 1 || (arr[6].held && arr[6].len != w.n) ||
        (arr[7].held && arr[7].len != w.n) || (w.timed && arr[8].len != w.n) || arr[12].len != w.n) {
        PyErr_Format(PyExc_ValueError, "walk: the index's arrays disagree on the node count (indptr has %zd items)",
                     arr[0].len);
        goto done;
    }
    w.lin = (Csr){&arr[0], &arr[1], &arr[2]};
    w.sa = (Csr){&arr[3], &arr[4], &arr[5]};
    w.stop = arr[6].held ? &arr[6] : NULL;
    w.report = arr[7].held ? &arr[7] : NULL;
    w.node_created = &arr[8];
    w.edge_created = &arr[9];
    w.twins = &arr[12];
    w.same_as = same_as;
    w.vias = vias;
    int bits = 0;
    while (bits < 63 && (((int64_t)1) << bits) < w.n) bits++;
    int rc = OK;
    List frontier = {0}, found = {0}, next = {0}, a = {0}, b = {0};
    int bitwise = !vias && !unite;
    size_t words = (size_t)w.n * (size_t)(bitwise ? 3 : 2); /* level bits after seen/step */
    int64_t *counts = NULL;
    if (counting && !(counts = calloc(arr[11].len ? (size_t)arr[11].len : 1, sizeof(int64_t)))) {
        PyErr_NoMemory();
        goto done;
    }
    w.counts = counts;
    uint64_t *second = NULL; /* the second thread's words */
    if (bitwise) { /* taken with the GIL held: one user at a time */
        w.seen = take_spare(0, words);
        second = take_spare(1, words);
    }
    Py_BEGIN_ALLOW_THREADS
    if (!w.seen && w.n) w.seen = words_alloc(words); /* zero pages: touched where reached */
    if (w.n && !w.seen) rc = NOMEM;
    if (w.seen && bitwise) w.level_bits = w.seen + (size_t)w.n * 2;
    if (w.n && !rc && unite) {
        rc = walk_from(&w, &arr[11], 0, arr[11].len, 0, depth, &frontier, &found, &next, &a, &b, bits);
    } else if (w.n && !rc) {
        int64_t len = arr[11].len, mid = len;
        if (sysconf(_SC_NPROCESSORS_ONLN) > 1 && len >= PARALLEL_STARTS) mid = len / 2 / 64 * 64;
        Job one = {.w = w, .starts = &arr[11], .lo = 0, .hi = mid, .depth = depth, .bits = bits, .bitwise = bitwise};
        Job two = one;
        pthread_t thread;
        int threaded = 0;
        if (mid < len) {
            two.lo = mid;
            two.hi = len;
            if (!second) second = words_alloc(words);
            two.w.seen = second;
            two.w.level_bits = two.w.seen && bitwise ? two.w.seen + (size_t)w.n * 2 : NULL;
            threaded = two.w.seen && pthread_create(&thread, NULL, run_job, &two) == 0;
            if (!threaded) one.hi = len;
        }
        run_job(&one);
        rc = one.rc;
        if (threaded) {
            pthread_join(thread, NULL);
            if (!rc && two.rc) {
                rc = two.rc;
                one.w.bad_array = two.w.bad_array, one.w.bad_at = two.w.bad_at, one.w.bad_value = two.w.bad_value;
            }
            if (!rc && (append(&one.w.out_start, &two.w.out_start) || append(&one.w.out_node, &two.w.out_node) ||
                        append(&one.w.out_depth, &two.w.out_depth) || append(&one.w.out_via, &two.w.out_via)))
                rc = NOMEM;
            if (two.rc) { /* its words may not be zero */
                words_free(second, words);
                second = NULL;
            }
            free(two.w.out_start.v), free(two.w.out_node.v), free(two.w.out_depth.v), free(two.w.out_via.v);
        }
        w = one.w; /* its rows, and what went wrong */
    }
    free(frontier.v), free(found.v), free(next.v), free(a.v), free(b.v), free(w.level.v), free(w.tmp.v);
    free(w.cand_v.v), free(w.cand_p.v), free(w.cand_b.v);
    Py_END_ALLOW_THREADS
    if (bitwise && rc == OK && w.seen) { /* the 64-start walks leave every word zero: keep them */
        give_spare(0, w.seen, words);
    } else {
        words_free(w.seen, words);
    }
    if (second) give_spare(1, second, words); /* unused, or zero again after a walk that ended well */
    if (rc == NOMEM) {
        PyErr_NoMemory();
    } else if (rc == BAD) {
        PyErr_Format(PyExc_ValueError, "walk: %s[%lld] = %lld is out of range", w.bad_array,
                     (long long)w.bad_at, (long long)w.bad_value);
    } else if (counts) {
        List rows = {.v = counts, .n = (size_t)arr[11].len};
        result = as_bytes(&rows);
    } else {
        PyObject *s = as_bytes(&w.out_start), *nd = as_bytes(&w.out_node), *d = as_bytes(&w.out_depth),
                 *v = as_bytes(&w.out_via);
        if (s && nd && d && v) result = PyTuple_Pack(4, s, nd, d, v);
        Py_XDECREF(s), Py_XDECREF(nd), Py_XDECREF(d), Py_XDECREF(v);
    }
    free(w.out_start.v), free(w.out_node.v), free(w.out_depth.v), free(w.out_via.v), free(counts);
done:
    for (int i = 0; i < 13; i++) release(&arr[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS,
     "walk(indptr, nbr, edge, sa_indptr, sa_nbr, sa_edge, stop, report, node_created, edge_created, has_same_as, as_of, "
     "starts, depth, same_as, vias, union) -> (start, node, depth, via) int64 bytearrays, or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_walk",
                                    "Breadth-first walks over the traversal index, compiled (see _walk.c).", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__walk(void) { return PyModule_Create(&module); }
