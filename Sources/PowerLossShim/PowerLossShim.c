// PowerLossShim: fault injection for the power-loss tests (Tests/CLITests/PowerLossTests.swift).
//
// A SIGKILL cannot tell synchronous FULL from NORMAL: the kernel's page cache outlives the
// process, so every write(2) a killed process made is still read back. A power loss keeps only
// what a sync made durable. Loaded with LD_PRELOAD into the processes that write a ledger, this
// library wraps the calls that make data durable (fsync, fdatasync; syncfs and sync too, though
// neither SQLite nor the ledger calls them) and records, for the ledger file ($POWERLOSS_DB) and
// its WAL ("<ledger>-wal"), what each successful sync made durable: "<file>.synced" is then, at
// every moment, a copy of the file as the disk is sure to hold it. A test assembles a directory
// from those copies (a file never synced is absent) and opens it: that is the ledger after a
// power loss that kept nothing the kernel had not been told to sync.
//
// What a copy holds: the file's content read *before* the real sync is called. Every byte read
// then was in the page cache when the sync began, so the sync made it durable; bytes written
// while the sync runs may or may not be durable, and the copy leaves them out (pessimistic).
// The read happens under an flock of "<file>.synced.lock" that also numbers the copies; a
// copy is published (renamed over "<file>.synced") only when its sync succeeded and no copy
// begun later was published first, so concurrent syncs in several processes never put an older
// copy over a newer one. A process killed between its read and its rename publishes nothing:
// it never learned that its sync completed, so it acknowledged nothing on the strength of it.
//
// Every failure of the shim itself (no room for a copy, say) aborts the process with a message
// on stderr: a missing copy would look like data lost by the ledger.
//
// Linux only (paths come from /proc/self/fd).

#define _GNU_SOURCE
#include "PowerLossShim.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_syncfs)(int);
static void (*real_sync)(void);

/// The watched files: [0] the ledger, [1] its WAL. Empty strings when POWERLOSS_DB is unset.
static char watched[2][PATH_MAX];
static pthread_once_t setup_once = PTHREAD_ONCE_INIT;

static void fail(const char *what, const char *path) {
    fprintf(stderr, "powerloss-shim: %s %s: %s\n", what, path, strerror(errno));
    abort();
}

static void setup(void) {
    real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    real_syncfs = (int (*)(int))dlsym(RTLD_NEXT, "syncfs");
    real_sync = (void (*)(void))dlsym(RTLD_NEXT, "sync");
    if (!real_fsync || !real_fdatasync || !real_syncfs || !real_sync) {
        fprintf(stderr, "powerloss-shim: cannot find the real sync functions\n");
        abort();
    }
    const char *database = getenv("POWERLOSS_DB");
    if (database == NULL || database[0] == '\0') return;
    // The ledger may not exist yet: resolve its folder, which must, as /proc/self/fd will.
    char folder[PATH_MAX], resolved[PATH_MAX];
    const char *slash = strrchr(database, '/');
    const char *name = slash ? slash + 1 : database;
    if (slash) {
        size_t length = (size_t)(slash - database);
        if (length == 0) length = 1;  // "/ledger.db"
        if (length >= sizeof folder) { errno = ENAMETOOLONG; fail("cannot resolve", database); }
        memcpy(folder, database, length);
        folder[length] = '\0';
    } else {
        strcpy(folder, ".");
    }
    if (realpath(folder, resolved) == NULL) fail("cannot resolve the folder of", database);
    int written = snprintf(watched[0], PATH_MAX, "%s/%s", strcmp(resolved, "/") == 0 ? "" : resolved, name);
    if (written < 0 || written >= PATH_MAX - 8) { errno = ENAMETOOLONG; fail("cannot watch", database); }
    snprintf(watched[1], PATH_MAX, "%s-wal", watched[0]);
}

/// The index in `watched` of the file open as `fd`, or -1.
static int watched_index(int fd) {
    if (watched[0][0] == '\0') return -1;
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t length = readlink(link, path, sizeof path - 1);
    if (length < 0) return -1;
    path[length] = '\0';  // a deleted file reads "… (deleted)" and matches nothing
    for (int index = 0; index < 2; index++) {
        if (strcmp(path, watched[index]) == 0) return index;
    }
    return -1;
}

/// A copy read before a sync, waiting to be published after it.
struct pending_copy {
    int index;
    uint64_t generation;
    char temporary[PATH_MAX + 64];
};

/// Takes the flock that orders the copies of watched[index]; returns its descriptor.
/// The lock file holds two counters: the last generation handed out, the last one published.
static int lock_copies(int index, uint64_t counters[2]) {
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s.synced.lock", watched[index]);
    int descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (descriptor < 0) fail("cannot open", path);
    while (flock(descriptor, LOCK_EX) != 0) {
        if (errno != EINTR) fail("cannot lock", path);
    }
    ssize_t got = pread(descriptor, counters, 2 * sizeof(uint64_t), 0);
    if (got == 0) {
        counters[0] = counters[1] = 0;
    } else if (got != 2 * sizeof(uint64_t)) {
        fail("cannot read the counters in", path);
    }
    return descriptor;
}

static void unlock_copies(int descriptor, const uint64_t counters[2]) {
    if (pwrite(descriptor, counters, 2 * sizeof(uint64_t), 0) != 2 * sizeof(uint64_t)) {
        fail("cannot write the copy counters", watched[0]);
    }
    close(descriptor);  // releases the flock
}

/// Copies everything `source` holds to a new file at `destination`.
static void copy_content(int source, const char *destination) {
    int target = open(destination, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (target < 0) fail("cannot create", destination);
    size_t capacity = 1 << 20;
    char *buffer = malloc(capacity);
    if (buffer == NULL) fail("out of memory copying to", destination);
    off_t offset = 0;
    for (;;) {
        ssize_t got = pread(source, buffer, capacity, offset);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) fail("cannot read the file copied to", destination);
        if (got == 0) break;
        for (ssize_t done = 0; done < got;) {
            ssize_t put = write(target, buffer + done, (size_t)(got - done));
            if (put < 0 && errno == EINTR) continue;
            if (put < 0) fail("cannot write", destination);
            done += put;
        }
        offset += got;
    }
    free(buffer);
    if (close(target) != 0) fail("cannot close", destination);
}

/// Before a sync of watched[index] (open as `fd`, or by path when fd < 0): reads the content.
static void begin_copy(int index, int fd, struct pending_copy *copy) {
    uint64_t counters[2];
    int lock = lock_copies(index, counters);
    copy->index = index;
    copy->generation = ++counters[0];
    snprintf(copy->temporary, sizeof copy->temporary, "%s.synced.%d.%llu", watched[index], (int)getpid(),
             (unsigned long long)copy->generation);
    int source = fd;
    if (fd >= 0) {
        // A descriptor open for writing only cannot be read: read the same file through /proc.
        int mode = fcntl(fd, F_GETFL);
        if (mode >= 0 && (mode & O_ACCMODE) == O_WRONLY) {
            char link[64];
            snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
            source = open(link, O_RDONLY | O_CLOEXEC);
        }
    } else {
        source = open(watched[index], O_RDONLY | O_CLOEXEC);
    }
    if (source < 0 && errno == ENOENT) {
        copy->index = -1;  // sync(2) with the file absent: nothing to copy
    } else {
        if (source < 0) fail("cannot read", watched[index]);
        copy_content(source, copy->temporary);
        if (source != fd) close(source);
    }
    unlock_copies(lock, counters);
}

/// After the sync: publishes the copy when the sync succeeded and no later copy is published.
static void end_copy(struct pending_copy *copy, int synced) {
    if (copy->index < 0) return;
    uint64_t counters[2];
    int lock = lock_copies(copy->index, counters);
    if (synced && copy->generation > counters[1]) {
        char published[PATH_MAX + 16];
        snprintf(published, sizeof published, "%s.synced", watched[copy->index]);
        if (rename(copy->temporary, published) != 0) fail("cannot publish", published);
        counters[1] = copy->generation;
    } else {
        unlink(copy->temporary);
    }
    unlock_copies(lock, counters);
}

/// Runs `real(fd)` with the copy around it when fd is a watched file.
static int synced_descriptor(int (*real)(int), int fd) {
    int index = watched_index(fd);
    if (index < 0) return real(fd);
    struct pending_copy copy;
    int saved = errno;
    begin_copy(index, fd, &copy);
    errno = saved;
    int result = real(fd);
    saved = errno;
    end_copy(&copy, result == 0);
    errno = saved;
    return result;
}

int fsync(int fd) {
    pthread_once(&setup_once, setup);
    return synced_descriptor(real_fsync, fd);
}

int fdatasync(int fd) {
    pthread_once(&setup_once, setup);
    return synced_descriptor(real_fdatasync, fd);
}

/// syncfs and sync flush every file: both watched files are copied around them.
int syncfs(int fd) {
    pthread_once(&setup_once, setup);
    if (watched[0][0] == '\0') return real_syncfs(fd);
    struct pending_copy copies[2];
    for (int index = 0; index < 2; index++) begin_copy(index, -1, &copies[index]);
    int result = real_syncfs(fd);
    int saved = errno;
    for (int index = 0; index < 2; index++) end_copy(&copies[index], result == 0);
    errno = saved;
    return result;
}

void sync(void) {
    pthread_once(&setup_once, setup);
    if (watched[0][0] == '\0') {
        real_sync();
        return;
    }
    struct pending_copy copies[2];
    for (int index = 0; index < 2; index++) begin_copy(index, -1, &copies[index]);
    real_sync();
    for (int index = 0; index < 2; index++) end_copy(&copies[index], 1);
}
