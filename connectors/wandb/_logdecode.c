/* The hot loops of reading a W&B transaction log, compiled: the block framing with its CRC
 * check (`_txlog._scan`) and the bulk decode of history and summary records (`_bulk`).
 *
 * The Python code stays the reference; this module only takes the common, well-formed case
 * faster and gives up on anything else:
 *
 * - scan(data, base, origin) -> (payloads, offsets, resume): records up to the first thing the
 *   Python scan would report (a damaged chunk, a broken sequence, a truncated tail). `resume`
 *   is the last record boundary reached, so `_txlog._scan` continues from there in Python and
 *   the results are the same as its own from the start.
 * - history(payloads) -> (steps, counts, names, values) or None
 * - summary(payloads) -> (paths, values) or None
 *   exactly what `_bulk.history` / `_bulk.summary` return, or None ("cannot": the Python
 *   decode takes the batch) for any payload outside the strict shape the SDK writes: unknown
 *   or repeated fields, a wire type other than the declared one, non-minimal varints, invalid
 *   UTF-8, a summary remove.
 *
 * The bytes are untrusted: every read is checked against the end of its buffer, varints stop
 * at 10 bytes, and lengths are compared with what remains before they are added.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* memmem */
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <zlib.h>

#define BLOCK_SIZE 32768
#define CHUNK_HEADER_SIZE 7
enum { FULL = 1, FIRST = 2, MIDDLE = 3, LAST = 4 };

/* -- framing ------------------------------------------------------------------------------ */

typedef struct {
    char *buf;
    size_t len, cap;
} Bytes;

static int bytes_add(Bytes *b, const unsigned char *p, size_t n) {
    if (n > SIZE_MAX - b->len) return -1;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->len + n) {
            if (cap > SIZE_MAX / 2) return -1;
            cap *= 2;
        }
        char *grown = realloc(b->buf, cap);
        if (!grown) return -1;
        b->buf = grown;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, p, n);
    b->len += n;
    return 0;
}

static int append_record(PyObject *payloads, PyObject *offsets, const char *p, Py_ssize_t n, Py_ssize_t at) {
    PyObject *payload = PyBytes_FromStringAndSize(p, n);
    if (!payload) return -1;
    int rc = PyList_Append(payloads, payload);
    Py_DECREF(payload);
    if (rc < 0) return -1;
    PyObject *offset = PyLong_FromSsize_t(at);
    if (!offset) return -1;
    rc = PyList_Append(offsets, offset);
    Py_DECREF(offset);
    return rc;
}

static PyObject *scan(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer view;
    Py_ssize_t base, origin;
    if (!PyArg_ParseTuple(args, "y*nn", &view, &base, &origin)) return NULL;
    const unsigned char *data = view.buf;
    Py_ssize_t size = view.len;
    PyObject *payloads = PyList_New(0), *offsets = PyList_New(0);
    Bytes parts = {NULL, 0, 0};
    if (!payloads || !offsets || base < 0 || origin < 0 || base > PY_SSIZE_T_MAX - size - 2 * BLOCK_SIZE) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "bad base or origin");
        goto fail;
    }
    /* absolute offsets, as in `_txlog._scan`; data[i] is the byte at base + i */
    Py_ssize_t end = base + size, pos = base, resume = base, record_start = -1;
    while (pos < end) {
        Py_ssize_t rel = pos - origin;
        Py_ssize_t block_end = pos + BLOCK_SIZE - (rel >= 0 ? rel % BLOCK_SIZE : (BLOCK_SIZE - (-rel) % BLOCK_SIZE) % BLOCK_SIZE);
        if (block_end - pos < CHUNK_HEADER_SIZE) {
            pos = block_end; /* the block's zero trailer */
            if (record_start < 0) resume = pos < end ? pos : end;
            continue;
        }
        if (pos + CHUNK_HEADER_SIZE > end) break;
        const unsigned char *h = data + (pos - base);
        uint32_t crc = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
        Py_ssize_t length = (Py_ssize_t)h[4] | (Py_ssize_t)h[5] << 8;
        int kind = h[6];
        Py_ssize_t chunk_end = pos + CHUNK_HEADER_SIZE + length;
        if (kind < FULL || kind > LAST || chunk_end > block_end || chunk_end > end) break;
        const unsigned char *payload = h + CHUNK_HEADER_SIZE;
        unsigned char type_byte = (unsigned char)kind;
        uLong sum = crc32(crc32(0L, &type_byte, 1), payload, (uInt)length);
        if ((uint32_t)sum != crc) break;
        if (kind == FULL || kind == FIRST) {
            if (record_start >= 0) break; /* a record without its LAST chunk */
            if (kind == FULL) {
                if (append_record(payloads, offsets, (const char *)payload, length, pos) < 0) goto fail;
                resume = chunk_end;
            } else {
                record_start = pos;
                parts.len = 0;
                if (bytes_add(&parts, payload, (size_t)length) < 0) goto nomem;
            }
        } else {
            if (record_start < 0) break; /* a MIDDLE or LAST chunk without its FIRST */
            if (bytes_add(&parts, payload, (size_t)length) < 0) goto nomem;
            if (kind == LAST) {
                if (append_record(payloads, offsets, parts.buf, (Py_ssize_t)parts.len, record_start) < 0) goto fail;
                record_start = -1;
                resume = chunk_end;
            }
        }
        pos = chunk_end;
    }
    free(parts.buf);
    PyBuffer_Release(&view);
    return Py_BuildValue("(NNn)", payloads, offsets, resume);
nomem:
    PyErr_NoMemory();
fail:
    free(parts.buf);
    Py_XDECREF(payloads);
    Py_XDECREF(offsets);
    PyBuffer_Release(&view);
    return NULL;
}

/* -- protobuf ----------------------------------------------------------------------------- */

typedef struct {
    const unsigned char *p, *end;
} Reader;

/* a varint of at most 10 bytes; 0 when it runs past the end, is longer, or overflows 64 bits */
static int read_varint(Reader *r, uint64_t *out) {
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (r->p >= r->end) return 0;
        unsigned char b = *r->p++;
        if (i == 9 && b > 1) return 0;
        v |= (uint64_t)(b & 0x7F) << (7 * i);
        if (!(b & 0x80)) {
            *out = v;
            return 1;
        }
    }
    return 0;
}

/* a length-delimited field's body; 0 when its length exceeds what remains */
static int read_len(Reader *r, Reader *body) {
    uint64_t n;
    if (!read_varint(r, &n) || n > (uint64_t)(r->end - r->p)) return 0;
    body->p = r->p;
    body->end = r->p + n;
    r->p += n;
    return 1;
}

/* the same, and only when the length is written in its fewest bytes (as protobuf writes it,
 * so that `_bulk._Keys`' size check holds) */
static int read_len_minimal(Reader *r, Reader *body) {
    const unsigned char *start = r->p;
    if (!read_len(r, body)) return 0;
    uint64_t n = (uint64_t)(body->end - body->p);
    int used = (int)(body->p - start), need = 1;
    while (n >= 0x80) {
        n >>= 7;
        need++;
    }
    return used == need;
}

#define LEN_FIELD(number) ((uint64_t)(number) << 3 | 2)

/* A record's fields outside its oneof: num (1, varint), control (16), uuid (19), _info (200). */
static int skip_record_field(Reader *r, uint64_t tag) {
    uint64_t ignored;
    Reader body;
    if (tag == (1 << 3 | 0)) return read_varint(r, &ignored);
    if (tag == LEN_FIELD(16) || tag == LEN_FIELD(19) || tag == LEN_FIELD(200)) return read_len(r, &body);
    return 0;
}

/* An item's key prefix (the bytes before its first `82 01`) -> its path and dotted name, one
 * entry per distinct prefix in an open-addressing table. The prefix bytes are not copied: they
 * stay in the payloads, which the call holds. */
typedef struct {
    uint64_t hash;
    const unsigned char *p;
    Py_ssize_t n;
    PyObject *path, *name;
} Key;

typedef struct {
    Key *slots;
    size_t cap, used;
} Keys;

static void keys_free(Keys *k) {
    for (size_t i = 0; i < k->cap; i++) {
        if (k->slots[i].p) {
            Py_XDECREF(k->slots[i].path);
            Py_XDECREF(k->slots[i].name);
        }
    }
    free(k->slots);
}

static uint64_t fnv1a(const unsigned char *p, Py_ssize_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (Py_ssize_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

static int keys_grow(Keys *k) {
    size_t cap = k->cap ? k->cap * 2 : 64;
    Key *slots = calloc(cap, sizeof(Key));
    if (!slots) return -1;
    for (size_t i = 0; i < k->cap; i++) {
        if (!k->slots[i].p) continue;
        size_t j = k->slots[i].hash & (cap - 1);
        while (slots[j].p) j = (j + 1) & (cap - 1);
        slots[j] = k->slots[i];
    }
    free(k->slots);
    k->slots = slots;
    k->cap = cap;
    return 0;
}

/* The path of a key prefix: key fields only (`key` 1, `nested_key` 2, minimal lengths, UTF-8),
 * the `nested_key`s when there are any, else its one `key`. NULL without an exception when the
 * prefix is not that; NULL with one on a memory error. */
static PyObject *decode_path(const unsigned char *p, Py_ssize_t n) {
    Reader r = {p, p + n};
    PyObject *keys = PyList_New(0), *nested = PyList_New(0), *path = NULL;
    if (!keys || !nested) goto done;
    while (r.p < r.end) {
        unsigned char tag = *r.p++;
        Reader body;
        if ((tag != 0x0A && tag != 0x12) || !read_len_minimal(&r, &body)) goto done;
        PyObject *s = PyUnicode_DecodeUTF8((const char *)body.p, body.end - body.p, NULL);
        if (!s) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) goto done;
            PyErr_Clear();
            goto done;
        }
        int rc = PyList_Append(tag == 0x0A ? keys : nested, s);
        Py_DECREF(s);
        if (rc < 0) goto done;
    }
    if (PyList_GET_SIZE(nested) > 0) path = PyList_AsTuple(nested);
    else if (PyList_GET_SIZE(keys) == 1) path = PyList_AsTuple(keys);
done:
    Py_XDECREF(keys);
    Py_XDECREF(nested);
    return path;
}

static PyObject *dotted(PyObject *path) {
    if (PyTuple_GET_SIZE(path) == 1) {
        PyObject *name = PyTuple_GET_ITEM(path, 0);
        Py_INCREF(name);
        return name;
    }
    PyObject *dot = PyUnicode_FromString(".");
    if (!dot) return NULL;
    PyObject *name = PyUnicode_Join(dot, path);
    Py_DECREF(dot);
    return name;
}

/* The entry for a prefix, decoded the first time it is seen. NULL without an exception when
 * the prefix is not key fields only. */
static Key *keys_get(Keys *k, const unsigned char *p, Py_ssize_t n) {
    uint64_t hash = fnv1a(p, n);
    if (k->cap) {
        size_t j = hash & (k->cap - 1);
        for (; k->slots[j].p; j = (j + 1) & (k->cap - 1)) {
            Key *e = &k->slots[j];
            if (e->hash == hash && e->n == n && memcmp(e->p, p, (size_t)n) == 0) return e->path ? e : NULL;
        }
    }
    if ((k->used + 1) * 2 > k->cap && keys_grow(k) < 0) {
        PyErr_NoMemory();
        return NULL;
    }
    PyObject *path = decode_path(p, n);
    if (!path && PyErr_Occurred()) return NULL;
    size_t j = hash & (k->cap - 1);
    while (k->slots[j].p) j = (j + 1) & (k->cap - 1);
    Key *e = &k->slots[j];
    e->hash = hash;
    /* an empty prefix still needs a non-NULL marker for "slot used" */
    e->p = n ? p : (const unsigned char *)"";
    e->n = n;
    e->path = path; /* NULL: remembered as not key fields */
    e->name = NULL;
    k->used++;
    return path ? e : NULL;
}

/* One raw item (`HistoryItem`/`SummaryItem` bytes): its key entry, and its value_json appended
 * to `values`. 0: not the strict shape (key prefix, `82 01`, value, end); -1: an error. */
static int decode_item(Keys *keys, Reader item, PyObject *values, Key **key) {
    static const unsigned char VALUE_TAG[2] = {0x82, 0x01};
    Py_ssize_t n = item.end - item.p;
    const unsigned char *tag = n >= 2 ? memmem(item.p, (size_t)n, VALUE_TAG, 2) : NULL;
    if (!tag) return 0;
    Key *e = keys_get(keys, item.p, tag - item.p);
    if (!e) return PyErr_Occurred() ? -1 : 0;
    Reader r = {tag + 2, item.end}, value;
    if (!read_len_minimal(&r, &value) || r.p != r.end) return 0;
    PyObject *s = PyUnicode_DecodeUTF8((const char *)value.p, value.end - value.p, NULL);
    if (!s) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) return -1;
        PyErr_Clear();
        return 0;
    }
    int rc = PyList_Append(values, s);
    Py_DECREF(s);
    if (rc < 0) return -1;
    *key = e;
    return 1;
}

static int append_new(PyObject *list, PyObject *item) {
    if (!item) return -1;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

/* `_bulk.history`: each payload a Record with exactly one `history` (2) Row of items (1), at
 * most one `step` (2, a Step of `num` 1) and `_info` (200). */
static PyObject *history(PyObject *self, PyObject *payloads) {
    (void)self;
    if (!PyList_Check(payloads)) {
        PyErr_SetString(PyExc_TypeError, "history() takes a list of bytes");
        return NULL;
    }
    Keys keys = {NULL, 0, 0};
    PyObject *steps = PyList_New(0), *counts = PyList_New(0), *names = PyList_New(0), *values = PyList_New(0);
    PyObject *result = NULL;
    if (!steps || !counts || !names || !values) goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(payloads); i++) {
        PyObject *payload = PyList_GET_ITEM(payloads, i);
        if (!PyBytes_Check(payload)) goto cannot;
        const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(payload);
        Reader rec = {p, p + PyBytes_GET_SIZE(payload)}, row = {NULL, NULL};
        int rows = 0;
        while (rec.p < rec.end) {
            uint64_t tag;
            if (!read_varint(&rec, &tag)) goto cannot;
            if (tag == LEN_FIELD(2)) {
                if (rows++ || !read_len(&rec, &row)) goto cannot;
            } else if (!skip_record_field(&rec, tag)) {
                goto cannot;
            }
        }
        if (rows != 1) goto cannot;
        uint64_t step = 0;
        int steps_seen = 0;
        Py_ssize_t count = 0;
        while (row.p < row.end) {
            uint64_t tag;
            Reader body;
            if (!read_varint(&row, &tag) || (tag & 7) != 2 || !read_len(&row, &body)) goto cannot;
            if (tag == LEN_FIELD(1)) {
                Key *key;
                int rc = decode_item(&keys, body, values, &key);
                if (rc < 0) goto done;
                if (rc == 0) goto cannot;
                if (!key->name && !(key->name = dotted(key->path))) goto done;
                if (PyList_Append(names, key->name) < 0) goto done;
                count++;
            } else if (tag == LEN_FIELD(2)) {
                if (steps_seen++) goto cannot;
                while (body.p < body.end) { /* Step: `num` (1, varint), the last one set */
                    uint64_t step_tag;
                    if (!read_varint(&body, &step_tag) || step_tag != (1 << 3 | 0) || !read_varint(&body, &step))
                        goto cannot;
                }
            } else if (tag != LEN_FIELD(200)) {
                goto cannot;
            }
        }
        if (append_new(steps, PyLong_FromLongLong((long long)step)) < 0) goto done;
        if (append_new(counts, PyLong_FromSsize_t(count)) < 0) goto done;
    }
    result = PyTuple_Pack(4, steps, counts, names, values);
    goto done;
cannot:
    result = Py_None;
    Py_INCREF(result);
done:
    keys_free(&keys);
    Py_XDECREF(steps);
    Py_XDECREF(counts);
    Py_XDECREF(names);
    Py_XDECREF(values);
    return result;
}

/* `_bulk.summary`: each payload a Record whose `summary` (3) occurrences hold `update` (1)
 * items and `_info` (200); a `remove` (2) or anything else: None. */
static PyObject *summary(PyObject *self, PyObject *payloads) {
    (void)self;
    if (!PyList_Check(payloads)) {
        PyErr_SetString(PyExc_TypeError, "summary() takes a list of bytes");
        return NULL;
    }
    Keys keys = {NULL, 0, 0};
    PyObject *paths = PyList_New(0), *values = PyList_New(0), *result = NULL;
    if (!paths || !values) goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(payloads); i++) {
        PyObject *payload = PyList_GET_ITEM(payloads, i);
        if (!PyBytes_Check(payload)) goto cannot;
        const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(payload);
        Reader rec = {p, p + PyBytes_GET_SIZE(payload)};
        while (rec.p < rec.end) {
            uint64_t tag;
            if (!read_varint(&rec, &tag)) goto cannot;
            if (tag != LEN_FIELD(3)) {
                if (!skip_record_field(&rec, tag)) goto cannot;
                continue;
            }
            Reader sums;
            if (!read_len(&rec, &sums)) goto cannot;
            while (sums.p < sums.end) {
                uint64_t sums_tag;
                Reader body;
                if (!read_varint(&sums, &sums_tag) || !read_len(&sums, &body)) goto cannot;
                if (sums_tag == LEN_FIELD(1)) {
                    Key *key;
                    int rc = decode_item(&keys, body, values, &key);
                    if (rc < 0) goto done;
                    if (rc == 0) goto cannot;
                    if (PyList_Append(paths, key->path) < 0) goto done;
                } else if (sums_tag != LEN_FIELD(200)) {
                    goto cannot;
                }
            }
        }
    }
    result = PyTuple_Pack(2, paths, values);
    goto done;
cannot:
    result = Py_None;
    Py_INCREF(result);
done:
    keys_free(&keys);
    Py_XDECREF(paths);
    Py_XDECREF(values);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, "scan(data, base, origin) -> (payloads, offsets, resume): whole records up to the first issue"},
    {"history", history, METH_O, "history(payloads) -> (steps, counts, names, values), or None: cannot"},
    {"summary", summary, METH_O, "summary(payloads) -> (paths, values), or None: cannot"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_logdecode",
                                    "Compiled framing and bulk decode of W&B transaction logs.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__logdecode(void) { return PyModule_Create(&module); }
