/* bridge._outlet: a call's outbound queue and its clock tick, in C.

   The pure-Python `bridge.outlet.PyOutlet` is the reference and the fallback; this type behaves the same
   (tests/unit/test_outlet.py runs every test against both). Why it exists: the media clock writes one frame
   per call every 20 ms, so with hundreds of calls this tick is most of the bridge's own work, and in Python
   each tick walks a dozen objects that are cold in the cache by the next one (docs/performance.md). Here a
   tick is one read(2), one sendmsg(2) and a few fields of one struct, with Python called back only for the
   unusual: inbound data that is not one plain audio message, a send the kernel would not take whole, a
   producer to wake.

   The clock owns the socket's I/O only while `fd` >= 0 (the call is read on its tick, so the event loop does
   not watch the socket). Otherwise frames go through `write` (the transport's). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define FRAME_BYTES 320
#define MESSAGE_BYTES (3 + FRAME_BYTES)
#define READ_BYTES 4096 /* one tick's read: a period normally holds one or two messages */

static const char AUDIO_HEADER[3] = {0x10, 0x01, 0x40}; /* kind 0x10, length 320 */
static PyObject *SILENCE;                               /* the header and 320 zero bytes */

typedef struct {
    PyObject *obj;        /* bytes: one whole message; list: a run of 320-byte payloads (shared, never changed) */
    Py_ssize_t next, end; /* a run's next frame and its end */
} Entry;

typedef struct {
    PyObject_HEAD
    int fd;
    char count_plain;
    char ended;
    char space_waiting;
    char drain_waiting;
    Py_ssize_t low_water;
    Py_ssize_t pending;
    long long frames_sent;
    long long speech_frames_sent;
    long long frames_received;
    long long spoke_at;
    PyObject *fade;
    PyObject *write;
    PyObject *on_read;
    PyObject *on_level;
    PyObject *on_blocked;
    Entry *ring;
    Py_ssize_t cap, head, count;
} Outlet;

static void
ring_clear(Outlet *self)
{
    /* Entries are detached first: a decref may run arbitrary code, which must see an empty queue. */
    Entry *ring = self->ring;
    Py_ssize_t cap = self->cap, head = self->head, count = self->count;
    self->head = self->count = 0;
    self->pending = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        Entry *e = &ring[(head + i) % cap];
        PyObject *obj = e->obj;
        e->obj = NULL;
        Py_XDECREF(obj);
    }
}

static int
ring_push(Outlet *self, PyObject *obj, Py_ssize_t end)
{
    if (self->count == self->cap) {
        Py_ssize_t cap = self->cap ? self->cap * 2 : 8;
        Entry *ring = PyMem_Calloc((size_t)cap, sizeof(Entry));
        if (ring == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < self->count; i++)
            ring[i] = self->ring[(self->head + i) % self->cap];
        PyMem_Free(self->ring);
        self->ring = ring;
        self->cap = cap;
        self->head = 0;
    }
    Entry *e = &self->ring[(self->head + self->count) % self->cap];
    Py_INCREF(obj);
    e->obj = obj;
    e->next = 0;
    e->end = end;
    self->count++;
    return 0;
}

static void
ring_pop(Outlet *self, PyObject **out)
{
    Entry *e = &self->ring[self->head];
    *out = e->obj; /* the caller owns the reference */
    e->obj = NULL;
    self->head = (self->head + 1) % self->cap;
    self->count--;
}

/* Call a callback the outlet holds with one argument (NULL: none). The callback is held for the call: it
   may close the outlet, which drops its own reference. */
static PyObject *
call_back(PyObject *callback, PyObject *arg)
{
    if (callback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the outlet is closed");
        return NULL;
    }
    Py_INCREF(callback);
    PyObject *result = arg == NULL ? PyObject_CallNoArgs(callback) : PyObject_CallOneArg(callback, arg);
    Py_DECREF(callback);
    return result;
}

/* Write `first` (a whole message) or the header and `payload`; what the kernel does not take goes through
   Python: `on_blocked` when the clock owns the socket (it hands the socket back to the event loop), else the
   transport's `write`. Returns -1 with an exception set. */
static int
emit(Outlet *self, PyObject *first, PyObject *payload)
{
    PyObject *rest, *result;
    if (self->fd >= 0) {
        struct iovec iov[2];
        struct msghdr msg;
        Py_ssize_t total;
        memset(&msg, 0, sizeof msg);
        if (payload == NULL) {
            iov[0].iov_base = PyBytes_AS_STRING(first);
            iov[0].iov_len = (size_t)PyBytes_GET_SIZE(first);
            msg.msg_iovlen = 1;
            total = PyBytes_GET_SIZE(first);
        } else {
            iov[0].iov_base = (void *)AUDIO_HEADER;
            iov[0].iov_len = 3;
            iov[1].iov_base = PyBytes_AS_STRING(payload);
            iov[1].iov_len = (size_t)PyBytes_GET_SIZE(payload);
            msg.msg_iovlen = 2;
            total = 3 + PyBytes_GET_SIZE(payload);
        }
        msg.msg_iov = iov;
        ssize_t n = sendmsg(self->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n == total)
            return 0;
        if (n < 0)
            n = 0; /* full, or an error: the transport writes it all and reports an error itself */
        rest = PyBytes_FromStringAndSize(NULL, total - n);
        if (rest == NULL)
            return -1;
        char *to = PyBytes_AS_STRING(rest);
        Py_ssize_t skip = n;
        for (size_t i = 0; i < msg.msg_iovlen; i++) {
            Py_ssize_t len = (Py_ssize_t)iov[i].iov_len;
            if (skip >= len) {
                skip -= len;
                continue;
            }
            memcpy(to, (char *)iov[i].iov_base + skip, (size_t)(len - skip));
            to += len - skip;
            skip = 0;
        }
        result = call_back(self->on_blocked, rest);
        Py_DECREF(rest);
    } else {
        if (self->write == NULL) {
            PyErr_SetString(PyExc_RuntimeError, "the outlet has no transport to write to");
            return -1;
        }
        if (payload == NULL) {
            result = call_back(self->write, first);
        } else {
            PyObject *whole = PyBytes_FromStringAndSize(NULL, 3 + PyBytes_GET_SIZE(payload));
            if (whole == NULL)
                return -1;
            memcpy(PyBytes_AS_STRING(whole), AUDIO_HEADER, 3);
            memcpy(PyBytes_AS_STRING(whole) + 3, PyBytes_AS_STRING(payload), (size_t)PyBytes_GET_SIZE(payload));
            result = call_back(self->write, whole);
            Py_DECREF(whole);
        }
    }
    if (result == NULL)
        return -1;
    Py_DECREF(result);
    return 0;
}

static PyObject *
Outlet_clock_tick(Outlet *self, PyObject *Py_UNUSED(ignored))
{
    if (self->fd >= 0) {
        char buf[READ_BYTES];
        ssize_t n = read(self->fd, buf, READ_BYTES);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            /* nothing arrived this period */
        } else if (n == MESSAGE_BYTES && self->count_plain && memcmp(buf, AUDIO_HEADER, 3) == 0) {
            self->frames_received++; /* the usual period: one 20 ms message, and nobody listening */
        } else {
            /* anything else, end of file and errors (as b"") included, is Python's */
            PyObject *data = PyBytes_FromStringAndSize(buf, n < 0 ? 0 : n);
            if (data == NULL)
                return NULL;
            PyObject *go = call_back(self->on_read, data);
            Py_DECREF(data);
            if (go == NULL)
                return NULL;
            int truth = PyObject_IsTrue(go);
            Py_DECREF(go);
            if (truth < 0)
                return NULL;
            if (!truth)
                Py_RETURN_NONE; /* the caller is gone: nothing may be written after its end */
        }
    }
    if (self->ended)
        Py_RETURN_NONE;
    /* The state moves before the write: a write may call back into Python, which must see it settled. */
    if (self->fade != NULL) {
        PyObject *fade = self->fade;
        self->fade = NULL;
        self->frames_sent++;
        int r = emit(self, fade, NULL);
        Py_DECREF(fade);
        if (r < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    if (self->count == 0) {
        self->frames_sent++;
        if (emit(self, SILENCE, NULL) < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    Entry *e = &self->ring[self->head];
    PyObject *first = NULL, *payload = NULL, *done = NULL;
    if (PyBytes_CheckExact(e->obj)) {
        ring_pop(self, &first);
    } else {
        PyObject *frames = e->obj;
        if (e->next >= PyList_GET_SIZE(frames)) {
            PyErr_SetString(PyExc_RuntimeError, "a run's list of frames was shortened while it played");
            return NULL;
        }
        payload = PyList_GET_ITEM(frames, e->next);
        if (!PyBytes_CheckExact(payload) || PyBytes_GET_SIZE(payload) != FRAME_BYTES) {
            PyErr_SetString(PyExc_TypeError, "a run's frames must be 320-byte bytes");
            return NULL;
        }
        Py_INCREF(payload);
        if (++e->next == e->end)
            ring_pop(self, &done);
    }
    self->pending--;
    self->speech_frames_sent++;
    self->spoke_at = self->frames_sent;
    self->frames_sent++;
    int r = emit(self, first, payload);
    Py_XDECREF(first);
    Py_XDECREF(payload);
    Py_XDECREF(done);
    if (r < 0)
        return NULL;
    if (!self->ended && self->on_level != NULL &&
        ((self->space_waiting && self->pending <= self->low_water) || (self->drain_waiting && self->pending == 0))) {
        PyObject *woken = call_back(self->on_level, NULL);
        if (woken == NULL)
            return NULL;
        Py_DECREF(woken);
    }
    Py_RETURN_NONE;
}

static PyObject *
Outlet_push(Outlet *self, PyObject *message)
{
    if (!PyBytes_CheckExact(message)) {
        PyErr_Format(PyExc_TypeError, "a message is bytes, not %.100s", Py_TYPE(message)->tp_name);
        return NULL;
    }
    if (ring_push(self, message, 0) < 0)
        return NULL;
    self->pending++;
    Py_RETURN_NONE;
}

static PyObject *
Outlet_push_run(Outlet *self, PyObject *frames)
{
    if (!PyList_CheckExact(frames)) {
        PyErr_Format(PyExc_TypeError, "a run is a list of frames, not %.100s", Py_TYPE(frames)->tp_name);
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(frames);
    if (n == 0)
        Py_RETURN_NONE;
    if (ring_push(self, frames, n) < 0)
        return NULL;
    self->pending += n;
    Py_RETURN_NONE;
}

static PyObject *
Outlet_clear(Outlet *self, PyObject *Py_UNUSED(ignored))
{
    ring_clear(self);
    Py_RETURN_NONE;
}

static PyObject *
Outlet_head_payload(Outlet *self, PyObject *Py_UNUSED(ignored))
{
    if (self->count == 0)
        Py_RETURN_NONE;
    Entry *e = &self->ring[self->head];
    if (PyBytes_CheckExact(e->obj))
        return PyBytes_FromStringAndSize(PyBytes_AS_STRING(e->obj) + 3, PyBytes_GET_SIZE(e->obj) - 3);
    if (e->next >= PyList_GET_SIZE(e->obj))
        Py_RETURN_NONE;
    PyObject *payload = PyList_GET_ITEM(e->obj, e->next);
    Py_INCREF(payload);
    return payload;
}

static int
Outlet_clear_refs(Outlet *self)
{
    ring_clear(self);
    Py_CLEAR(self->fade);
    Py_CLEAR(self->write);
    Py_CLEAR(self->on_read);
    Py_CLEAR(self->on_level);
    Py_CLEAR(self->on_blocked);
    return 0;
}

static PyObject *
Outlet_close(Outlet *self, PyObject *Py_UNUSED(ignored))
{
    self->ended = 1;
    self->fd = -1;
    Outlet_clear_refs(self);
    Py_RETURN_NONE;
}

static int
Outlet_traverse(Outlet *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->fade);
    Py_VISIT(self->write);
    Py_VISIT(self->on_read);
    Py_VISIT(self->on_level);
    Py_VISIT(self->on_blocked);
    for (Py_ssize_t i = 0; i < self->count; i++)
        Py_VISIT(self->ring[(self->head + i) % self->cap].obj);
    return 0;
}

static void
Outlet_dealloc(Outlet *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Outlet_clear_refs(self);
    PyMem_Free(self->ring);
    self->ring = NULL;
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static int
Outlet_init(Outlet *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"on_read", "on_level", "on_blocked", "low_water", NULL};
    PyObject *on_read, *on_level, *on_blocked;
    Py_ssize_t low_water = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO|n:Outlet", kwlist, &on_read, &on_level, &on_blocked,
                                     &low_water))
        return -1;
    if (!PyCallable_Check(on_read) || !PyCallable_Check(on_level) || !PyCallable_Check(on_blocked)) {
        PyErr_SetString(PyExc_TypeError, "on_read, on_level and on_blocked must be callables");
        return -1;
    }
    Py_INCREF(on_read);
    Py_XSETREF(self->on_read, on_read);
    Py_INCREF(on_level);
    Py_XSETREF(self->on_level, on_level);
    Py_INCREF(on_blocked);
    Py_XSETREF(self->on_blocked, on_blocked);
    self->low_water = low_water;
    self->fd = -1;
    return 0;
}

/* A new reference to a field that may be unset (NULL), as None. */
static PyObject *
field_or_none(PyObject *field)
{
    if (field == NULL)
        Py_RETURN_NONE;
    Py_INCREF(field);
    return field;
}

static PyObject *
Outlet_get_fade(Outlet *self, void *Py_UNUSED(closure))
{
    return field_or_none(self->fade);
}

static int
Outlet_set_fade(Outlet *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value != NULL && value != Py_None && !PyBytes_CheckExact(value)) {
        PyErr_SetString(PyExc_TypeError, "fade is bytes or None");
        return -1;
    }
    PyObject *fade = (value == NULL || value == Py_None) ? NULL : value;
    Py_XINCREF(fade);
    Py_XSETREF(self->fade, fade);
    return 0;
}

static PyObject *
Outlet_get_write(Outlet *self, void *Py_UNUSED(closure))
{
    return field_or_none(self->write);
}

static int
Outlet_set_write(Outlet *self, PyObject *value, void *Py_UNUSED(closure))
{
    PyObject *write = (value == NULL || value == Py_None) ? NULL : value;
    if (write != NULL && !PyCallable_Check(write)) {
        PyErr_SetString(PyExc_TypeError, "write must be a callable or None");
        return -1;
    }
    Py_XINCREF(write);
    Py_XSETREF(self->write, write);
    return 0;
}

static PyMemberDef Outlet_members[] = {
    {"fd", T_INT, offsetof(Outlet, fd), 0, "The socket the clock reads and writes itself; -1: the transport's."},
    {"count_plain", T_BOOL, offsetof(Outlet, count_plain), 0,
     "Whether one plain 20 ms audio message read on the tick is only counted (nobody listens)."},
    {"ended", T_BOOL, offsetof(Outlet, ended), READONLY, "Closed: nothing more is written."},
    {"space_waiting", T_BOOL, offsetof(Outlet, space_waiting), 0, "A producer waits for the low-water mark."},
    {"drain_waiting", T_BOOL, offsetof(Outlet, drain_waiting), 0, "Someone waits for the queue to empty."},
    {"low_water", T_PYSSIZET, offsetof(Outlet, low_water), 0, "Pending frames at which a producer is woken."},
    {"pending", T_PYSSIZET, offsetof(Outlet, pending), READONLY, "Frames queued, every frame of a run counted."},
    {"frames_sent", T_LONGLONG, offsetof(Outlet, frames_sent), 0, NULL},
    {"speech_frames_sent", T_LONGLONG, offsetof(Outlet, speech_frames_sent), 0, NULL},
    {"frames_received", T_LONGLONG, offsetof(Outlet, frames_received), 0, NULL},
    {"spoke_at", T_LONGLONG, offsetof(Outlet, spoke_at), 0, "frames_sent when the last queued frame went out."},
    {NULL}};

static PyGetSetDef Outlet_getset[] = {
    {"fade", (getter)Outlet_get_fade, (setter)Outlet_set_fade, "A message sent by the next tick before anything else.",
     NULL},
    {"write", (getter)Outlet_get_write, (setter)Outlet_set_write, "The transport's write (when fd is -1).", NULL},
    {NULL}};

static PyMethodDef Outlet_methods[] = {
    {"clock_tick", (PyCFunction)Outlet_clock_tick, METH_NOARGS, "Read what arrived, then write one frame."},
    {"push", (PyCFunction)Outlet_push, METH_O, "Queue one whole message (header included)."},
    {"push_run", (PyCFunction)Outlet_push_run, METH_O, "Queue a list of 320-byte payloads, played in place."},
    {"clear", (PyCFunction)Outlet_clear, METH_NOARGS, "Drop everything queued."},
    {"head_payload", (PyCFunction)Outlet_head_payload, METH_NOARGS, "The next queued frame's payload, or None."},
    {"close", (PyCFunction)Outlet_close, METH_NOARGS, "End: drop the queue and the callbacks, write nothing more."},
    {NULL}};

static PyType_Slot Outlet_slots[] = {
    {Py_tp_doc, "A call's outbound queue and its media clock tick (see bridge.outlet)."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, Outlet_init},
    {Py_tp_dealloc, Outlet_dealloc},
    {Py_tp_traverse, Outlet_traverse},
    {Py_tp_clear, Outlet_clear_refs},
    {Py_tp_methods, Outlet_methods},
    {Py_tp_members, Outlet_members},
    {Py_tp_getset, Outlet_getset},
    {0, NULL}};

static PyType_Spec Outlet_spec = {
    .name = "bridge._outlet.Outlet",
    .basicsize = sizeof(Outlet),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = Outlet_slots,
};

static int
module_exec(PyObject *module)
{
    char silence[MESSAGE_BYTES];
    memset(silence, 0, sizeof silence);
    memcpy(silence, AUDIO_HEADER, 3);
    if (SILENCE == NULL) {
        SILENCE = PyBytes_FromStringAndSize(silence, MESSAGE_BYTES);
        if (SILENCE == NULL)
            return -1;
    }
    PyObject *type = PyType_FromSpec(&Outlet_spec);
    if (type == NULL)
        return -1;
    if (PyModule_AddObject(module, "Outlet", type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot module_slots[] = {{Py_mod_exec, module_exec}, {0, NULL}};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "bridge._outlet",
    .m_doc = "A call's outbound queue and its media clock tick, in C (bridge.outlet.PyOutlet is the reference).",
    .m_size = 0,
    .m_slots = module_slots,
};

PyMODINIT_FUNC
PyInit__outlet(void)
{
    return PyModuleDef_Init(&module_def);
}
