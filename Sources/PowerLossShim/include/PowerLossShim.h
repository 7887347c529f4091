#ifndef POWER_LOSS_SHIM_H
#define POWER_LOSS_SHIM_H

// PowerLossShim is loaded with LD_PRELOAD; it exports only the libc calls it wraps:
//
//     int fsync(int fd);
//     int fdatasync(int fd);
//     int syncfs(int fd);
//     void sync(void);
//
// Environment (read once, at the first call):
//     POWERLOSS_DB   the ledger file; it and "<POWERLOSS_DB>-wal" are watched. Unset: the
//                    wrappers only call the real functions.
//
// After a successful sync of a watched file, "<file>.synced" holds the file's content as it was
// when the sync began: what the disk is sure to hold after a power loss. See PowerLossShim.c.

#endif
