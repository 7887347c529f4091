import Foundation

/// The network file systems a SQLite database in WAL mode must not live on.
///
/// WAL mode keeps the WAL's index in shared memory (the `-shm` file, mapped by every
/// connection) and coordinates connections with file locks; neither reaches across hosts on a
/// network file system, where connections can then corrupt the database. Recognised by the
/// type of the mount that holds the folder, as `/proc/self/mountinfo` gives it (Linux only;
/// Swift's Glibc module has no `statfs(2)`): NFS, CIFS and SMB.
/// See <https://www.sqlite.org/wal.html> ("WAL does not work over a network filesystem").
public enum NetworkFileSystem {
    /// The mount types taken for network file systems.
    public static let types: Set<String> = ["nfs", "nfs4", "cifs", "smb3", "smbfs"]

    /// The type of the network file system that holds the folder of `path`; nil when it is
    /// local, or when it cannot be told (the folder does not exist, no `/proc`).
    public static func type(holding path: String) -> String? {
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        guard let resolved = realpath(folder, nil) else { return nil }
        defer { free(resolved) }
        guard let mountInfo = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return nil }
        return type(holding: String(cString: resolved), mountInfo: mountInfo)
    }

    /// The network file system type of the mount that holds `folder` (an absolute path without
    /// symbolic links) in `mountInfo` (the text of `/proc/self/mountinfo`), or nil.
    ///
    /// A line reads `36 35 98:0 /root /mount/point options… - type source options`; the mount
    /// point with the longest match wins, and the last mounted when two are the same.
    /// See proc(5).
    public static func type(holding folder: String, mountInfo: String) -> String? {
        var best: (mountPoint: String, type: String)?
        for line in mountInfo.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 4, let separator = fields.firstIndex(of: "-"), separator + 1 < fields.count else {
                continue
            }
            // Spaces and the like in a mount point are written as octal escapes (`\040`).
            let mountPoint = String(fields[4]).replacingOccurrences(of: "\\040", with: " ")
            let holds = mountPoint == "/" || folder == mountPoint || folder.hasPrefix(mountPoint + "/")
            if holds && mountPoint.count >= (best?.mountPoint.count ?? 0) {
                best = (mountPoint, String(fields[separator + 1]))
            }
        }
        guard let type = best?.type, types.contains(type) else { return nil }
        return type
    }
}
