/*
 * circusd._spawn: start one child with its whole identity, in C.
 *
 * The child is created with clone(CLONE_VM | CLONE_VFORK) on a stack of its
 * own, the way posix_spawn does: the daemon's memory is shared, not copied,
 * and the daemon's thread waits until the child has called execve or exited.
 * Between the clone and the exec the child makes system calls only, in this
 * order:
 *
 *   every signal to its default disposition, new session, stdin/stdout/stderr,
 *   every other descriptor closed except the ones passed, umask, rlimits,
 *   capability bounding set, supplementary groups, gid, uid, working
 *   directory (entered as the new user), no_new_privs, parent-death signal,
 *   the daemon's signal mask, execve.
 *
 * The credentials are changed with raw system calls: glibc's wrappers would
 * try to change every thread of the process, and a child sharing the
 * daemon's memory would signal the daemon's threads.
 *
 * A step that fails writes (step, detail, errno) to a close-on-exec pipe and
 * the child exits 127; spawn() reaps it and raises OSError(errno, strerror,
 * "step"), so the operator reads the exact reason and no program ever runs
 * with part of its identity.
 */

#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHILD_STACK (64 * 1024)

enum step {
    STEP_SESSION,
    STEP_STDIO,
    STEP_CLOSE_FDS,
    STEP_RLIMIT,
    STEP_BOUNDING_SET,
    STEP_SETGROUPS,
    STEP_SETGID,
    STEP_SETUID,
    STEP_CHDIR,
    STEP_NO_NEW_PRIVS,
    STEP_PDEATHSIG,
    STEP_EXEC,
};

static const char *const step_names[] = {
    "setsid", "stdio", "close_fds", "rlimit", "bounding_set", "setgroups",
    "setgid", "setuid", "chdir", "no_new_privs", "pdeathsig", "exec",
};

struct failure {
    int step;
    int detail;
    int error;
};

struct limit {
    int resource;
    struct rlimit value;
};

/* Everything the child needs, prepared by the daemon before the clone. */
struct plan {
    const char *program;
    char *const *argv;
    char *const *envp;
    const char *cwd;
    int stdio[3];     /* the fd to put at 0, 1, 2; -1 keeps circusd's own */
    const int *keep;  /* descriptors passed to the program, ascending */
    Py_ssize_t nkeep;
    int umask;        /* -1 keeps circusd's */
    const struct limit *limits;
    Py_ssize_t nlimits;
    const int *drop_caps;
    Py_ssize_t ndrop;
    const gid_t *groups;
    Py_ssize_t ngroups; /* -1 keeps circusd's groups */
    long gid, uid;      /* -1 keeps circusd's */
    int no_new_privs;
    int pdeathsig;
    pid_t parent;
    sigset_t mask; /* the daemon's mask, restored just before exec */
    int report;    /* write end of the failure pipe */
};

static int set_groups(const struct plan *p) {
#ifdef SYS_setgroups32
    return syscall(SYS_setgroups32, (size_t)p->ngroups, p->groups);
#else
    return syscall(SYS_setgroups, (size_t)p->ngroups, p->groups);
#endif
}

static int set_gid(gid_t gid) {
#ifdef SYS_setresgid32
    return syscall(SYS_setresgid32, gid, gid, gid);
#else
    return syscall(SYS_setresgid, gid, gid, gid);
#endif
}

static int set_uid(uid_t uid) {
#ifdef SYS_setresuid32
    return syscall(SYS_setresuid32, uid, uid, uid);
#else
    return syscall(SYS_setresuid, uid, uid, uid);
#endif
}

static void close_range_or_loop(unsigned int first, unsigned int last) {
    if (first > last)
        return;
#ifdef SYS_close_range
    if (syscall(SYS_close_range, first, last, 0) == 0)
        return;
#endif
    /* Kernels before 5.9: close one by one, up to the descriptor limit. */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < last)
        last = nofile.rlim_cur == 0 ? 0 : (unsigned int)nofile.rlim_cur - 1;
    for (unsigned int fd = first; fd <= last && fd >= first; fd++)
        close((int)fd);
}

_Noreturn static void fail(const struct plan *p, int step, int detail) {
    struct failure f = {step, detail, errno};
    ssize_t unused = write(p->report, &f, sizeof f);
    (void)unused;
    _exit(127);
}

static int child(void *arg) {
    const struct plan *p = arg;

    /* Every signal to its default, as systemd gives its services: none of
     * the daemon's Python handlers may run here, and nothing circusd's own
     * parent ignored (SIGHUP under nohup, glibc's real-time signals) stays
     * ignored in the program. The raw call, because glibc refuses its own
     * signals; an all-zero kernel sigaction is SIG_DFL on every layout. */
    static const unsigned long dfl[8];
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig != SIGKILL && sig != SIGSTOP)
            syscall(SYS_rt_sigaction, sig, dfl, NULL, (size_t)8); /* 64 bits */
    }
    if (setsid() < 0)
        fail(p, STEP_SESSION, 0);
    for (int target = 0; target < 3; target++) {
        if (p->stdio[target] >= 0 && dup2(p->stdio[target], target) < 0)
            fail(p, STEP_STDIO, target);
    }
    unsigned int next = 3;
    for (Py_ssize_t i = 0; i < p->nkeep; i++) {
        int fd = p->keep[i];
        close_range_or_loop(next, (unsigned int)fd - 1);
        int flags = fcntl(fd, F_GETFD);
        if (flags < 0 || fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC) < 0)
            fail(p, STEP_CLOSE_FDS, fd);
        next = (unsigned int)fd + 1;
    }
    /* The failure pipe, above every kept descriptor, stays open until the
     * exec closes it. */
    close_range_or_loop(next, (unsigned int)p->report - 1);
    close_range_or_loop((unsigned int)p->report + 1, ~0U);
    if (p->umask >= 0)
        umask((mode_t)p->umask);
    for (Py_ssize_t i = 0; i < p->nlimits; i++) {
        if (setrlimit(p->limits[i].resource, &p->limits[i].value) < 0)
            fail(p, STEP_RLIMIT, p->limits[i].resource);
    }
    for (Py_ssize_t i = 0; i < p->ndrop; i++) {
        if (prctl(PR_CAPBSET_DROP, p->drop_caps[i], 0, 0, 0) < 0)
            fail(p, STEP_BOUNDING_SET, p->drop_caps[i]);
    }
    if (p->ngroups >= 0 && set_groups(p) < 0)
        fail(p, STEP_SETGROUPS, 0);
    if (p->gid >= 0 && set_gid((gid_t)p->gid) < 0)
        fail(p, STEP_SETGID, (int)p->gid);
    if (p->uid >= 0 && set_uid((uid_t)p->uid) < 0)
        fail(p, STEP_SETUID, (int)p->uid);
    if (chdir(p->cwd) < 0)
        fail(p, STEP_CHDIR, 0);
    if (p->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        fail(p, STEP_NO_NEW_PRIVS, 0);
    /* After the uid change, which clears it; then make sure the daemon did
     * not die before the signal was armed. */
    if (p->pdeathsig > 0) {
        if (prctl(PR_SET_PDEATHSIG, p->pdeathsig, 0, 0, 0) < 0)
            fail(p, STEP_PDEATHSIG, p->pdeathsig);
        if (getppid() != p->parent) {
            errno = ESRCH;
            fail(p, STEP_PDEATHSIG, p->pdeathsig);
        }
    }
    sigprocmask(SIG_SETMASK, &p->mask, NULL);
    execve(p->program, p->argv, p->envp);
    fail(p, STEP_EXEC, 0);
}

/* -- arguments ------------------------------------------------------------- */

/* A NULL-terminated array of the bytes in an iterable. *owner gets a new
 * tuple holding every item: the caller keeps it until the exec, so no item
 * can be freed meanwhile, whatever the iterable was or whoever mutates it. */
static char **string_array(PyObject *seq, const char *what, PyObject **owner) {
    PyObject *items = PySequence_Tuple(seq);
    if (items == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(items);
    char **out = PyMem_Calloc((size_t)n + 1, sizeof(char *));
    if (out == NULL) {
        Py_DECREF(items);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(items, i);
        if (!PyBytes_Check(item)) {
            PyErr_Format(PyExc_TypeError, "%s: every item must be bytes", what);
            goto error;
        }
        out[i] = PyBytes_AS_STRING(item);
        if ((Py_ssize_t)strlen(out[i]) != PyBytes_GET_SIZE(item)) {
            PyErr_Format(PyExc_ValueError, "%s: embedded null byte", what);
            goto error;
        }
    }
    *owner = items;
    return out;
error:
    Py_DECREF(items);
    PyMem_Free(out);
    return NULL;
}

/* Integers from a sequence into a new array; *n gets the count. */
static int *int_array(PyObject *seq, Py_ssize_t *n, const char *what) {
    PyObject *fast = PySequence_Fast(seq, what);
    if (fast == NULL)
        return NULL;
    *n = PySequence_Fast_GET_SIZE(fast);
    int *out = PyMem_Calloc((size_t)*n + 1, sizeof(int));
    if (out == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        long value = PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, i));
        if (value < INT_MIN || value > INT_MAX) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_OverflowError, "%s: %ld is out of range",
                             what, value);
        }
        out[i] = (int)value;
        if (PyErr_Occurred()) {
            Py_DECREF(fast);
            PyMem_Free(out);
            return NULL;
        }
    }
    Py_DECREF(fast);
    return out;
}

static gid_t *gid_array(PyObject *seq, Py_ssize_t *n) {
    PyObject *fast = PySequence_Fast(seq, "groups");
    if (fast == NULL)
        return NULL;
    *n = PySequence_Fast_GET_SIZE(fast);
    gid_t *out = PyMem_Calloc((size_t)*n + 1, sizeof(gid_t));
    if (out == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        unsigned long value =
            PyLong_AsUnsignedLong(PySequence_Fast_GET_ITEM(fast, i));
        if (PyErr_Occurred() || value > (gid_t)-1) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_OverflowError, "groups: gid out of range");
            Py_DECREF(fast);
            PyMem_Free(out);
            return NULL;
        }
        out[i] = (gid_t)value;
    }
    Py_DECREF(fast);
    return out;
}

/* A limit: -1 (resource.RLIM_INFINITY) or 0 .. 2**64 - 1; anything else
 * raises instead of wrapping around. */
static int rlim_value(PyObject *obj, rlim_t *out) {
    if (!PyLong_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "rlimits: limits must be integers");
        return 0;
    }
    int overflow;
    if (PyLong_AsLongLongAndOverflow(obj, &overflow) == -1 && !overflow) {
        if (PyErr_Occurred())
            return 0;
        *out = RLIM_INFINITY;
        return 1;
    }
    unsigned long long value = PyLong_AsUnsignedLongLong(obj);
    if (PyErr_Occurred()) {
        PyErr_SetString(PyExc_OverflowError, "rlimits: limit out of range");
        return 0;
    }
    *out = (rlim_t)value;
    return 1;
}

static struct limit *limit_array(PyObject *seq, Py_ssize_t *n) {
    PyObject *fast = PySequence_Fast(seq, "rlimits");
    if (fast == NULL)
        return NULL;
    *n = PySequence_Fast_GET_SIZE(fast);
    struct limit *out = PyMem_Calloc((size_t)*n + 1, sizeof(struct limit));
    if (out == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        PyObject *soft, *hard;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fast, i), "iOO;rlimits",
                              &out[i].resource, &soft, &hard) ||
            !rlim_value(soft, &out[i].value.rlim_cur) ||
            !rlim_value(hard, &out[i].value.rlim_max)) {
            Py_DECREF(fast);
            PyMem_Free(out);
            return NULL;
        }
    }
    Py_DECREF(fast);
    return out;
}

static PyObject *raise_failure(const struct failure *f) {
    PyObject *where;
    if (f->step == STEP_RLIMIT || f->step == STEP_BOUNDING_SET ||
        f->step == STEP_STDIO)
        where = PyUnicode_FromFormat("%s %d", step_names[f->step], f->detail);
    else
        where = PyUnicode_FromString(step_names[f->step]);
    if (where == NULL)
        return NULL;
    PyObject *exc = PyObject_CallFunction(PyExc_OSError, "isO", f->error,
                                          strerror(f->error), where);
    Py_DECREF(where);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

PyDoc_STRVAR(spawn_doc,
"spawn(program, argv, envp, cwd, stdio, keep_fds, umask, rlimits,\n"
"      drop_caps, groups, gid, uid, no_new_privs, pdeathsig) -> pid\n\n"
"Start a child as described in the module's source. program, the argv and\n"
"envp items and cwd are bytes; stdio is three fds (-1 keeps circusd's);\n"
"keep_fds are passed to the program; rlimits are (resource, soft, hard);\n"
"drop_caps are capability numbers to remove from the bounding set; groups\n"
"is None or a sequence of gids; umask, gid, uid -1 and pdeathsig 0 mean\n"
"unchanged. A step that fails raises OSError with the step as filename.");

static PyObject *spawn(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *argv_seq, *envp_seq, *stdio_seq, *keep_seq, *limits_seq;
    PyObject *drop_seq, *groups_obj;
    struct plan p = {0};
    long gid, uid;
    int no_new_privs;
    PyObject *result = NULL;
    char **argv = NULL, **envp = NULL;
    PyObject *argv_items = NULL, *envp_items = NULL; /* keep argv, envp alive */
    int *stdio = NULL, *keep = NULL, *drop = NULL;
    gid_t *groups = NULL;
    struct limit *limits = NULL;
    char *stack = NULL;
    int pipe_fds[2] = {-1, -1};
    Py_ssize_t n;

    if (!PyArg_ParseTuple(args, "yOOyOOiOOOllpi:spawn", &p.program, &argv_seq,
                          &envp_seq, &p.cwd, &stdio_seq, &keep_seq, &p.umask,
                          &limits_seq, &drop_seq, &groups_obj, &gid, &uid,
                          &no_new_privs, &p.pdeathsig))
        return NULL;
    if ((argv = string_array(argv_seq, "argv", &argv_items)) == NULL ||
        (envp = string_array(envp_seq, "envp", &envp_items)) == NULL ||
        (stdio = int_array(stdio_seq, &n, "stdio")) == NULL)
        goto done;
    if (n != 3) {
        PyErr_SetString(PyExc_ValueError, "stdio: three descriptors expected");
        goto done;
    }
    if ((keep = int_array(keep_seq, &p.nkeep, "keep_fds")) == NULL ||
        (limits = limit_array(limits_seq, &p.nlimits)) == NULL ||
        (drop = int_array(drop_seq, &p.ndrop, "drop_caps")) == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < p.nkeep; i++) {
        /* INT_MAX too: the failure pipe must fit above every kept one. */
        if (keep[i] < 3 || keep[i] == INT_MAX ||
            (i > 0 && keep[i] <= keep[i - 1])) {
            PyErr_SetString(PyExc_ValueError,
                            "keep_fds: ascending descriptors above 2 expected");
            goto done;
        }
    }
    p.ngroups = -1;
    if (groups_obj != Py_None) {
        if ((groups = gid_array(groups_obj, &p.ngroups)) == NULL)
            goto done;
    }
    for (int i = 0; i < 3; i++)
        p.stdio[i] = stdio[i];
    p.argv = argv;
    p.envp = envp;
    p.keep = keep;
    p.limits = limits;
    p.drop_caps = drop;
    p.groups = groups;
    p.gid = gid;
    p.uid = uid;
    p.no_new_privs = no_new_privs;
    p.parent = getpid();
    if ((stack = PyMem_Malloc(CHILD_STACK)) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (pipe2(pipe_fds, O_CLOEXEC) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    /* Above every passed descriptor, so that closing the others spares it
     * until the exec. */
    int above = p.nkeep > 0 ? keep[p.nkeep - 1] + 1 : 3;
    if (pipe_fds[1] < above) {
        int moved = fcntl(pipe_fds[1], F_DUPFD_CLOEXEC, above);
        if (moved < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto done;
        }
        close(pipe_fds[1]);
        pipe_fds[1] = moved;
    }
    p.report = pipe_fds[1];

    /* No signal may reach a handler while the child shares our memory. */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &p.mask);
    pid_t pid = clone(child, stack + CHILD_STACK,
                      CLONE_VM | CLONE_VFORK | SIGCHLD, &p);
    int clone_errno = errno;
    pthread_sigmask(SIG_SETMASK, &p.mask, NULL);
    close(pipe_fds[1]);
    pipe_fds[1] = -1;
    if (pid < 0) {
        errno = clone_errno;
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, "clone");
        goto done;
    }

    /* The child has exec'd (the pipe is closed: EOF) or failed and exited. */
    struct failure f;
    ssize_t got;
    do {
        got = read(pipe_fds[0], &f, sizeof f);
    } while (got < 0 && errno == EINTR);
    if (got == (ssize_t)sizeof f) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        raise_failure(&f);
        goto done;
    }
    result = PyLong_FromLong(pid);

done:
    if (pipe_fds[0] >= 0)
        close(pipe_fds[0]);
    if (pipe_fds[1] >= 0)
        close(pipe_fds[1]);
    PyMem_Free(stack);
    PyMem_Free(argv);
    PyMem_Free(envp);
    Py_XDECREF(argv_items);
    Py_XDECREF(envp_items);
    PyMem_Free(stdio);
    PyMem_Free(keep);
    PyMem_Free(limits);
    PyMem_Free(drop);
    PyMem_Free(groups);
    return result;
}

static PyMethodDef methods[] = {
    {"spawn", spawn, METH_VARARGS, spawn_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "circusd._spawn",
    .m_doc = "Starting a child with its identity, without Python between "
             "clone and exec.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__spawn(void) { return PyModule_Create(&module); }
