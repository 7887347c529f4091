import Foundation
import Testing

@testable import LedgerSQLite

@Suite("Network file systems are recognised")
struct NetworkFileSystemTests {
    /// A mount table as /proc/self/mountinfo gives it: a local root, an NFS share, a local disk
    /// mounted inside the share, a CIFS share whose name has a space.
    static let mountInfo = """
        22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
        40 22 0:45 / /mnt/share rw,relatime shared:20 - nfs4 server:/export rw,vers=4.2
        41 40 8:17 / /mnt/share/local rw,relatime shared:21 - xfs /dev/sdb1 rw
        42 22 0:50 / /srv/team\\040files rw,relatime shared:22 - cifs //nas/team rw
        43 22 0:51 / /tmp rw,nosuid shared:23 - tmpfs tmpfs rw
        """

    @Test("the mount holding a folder decides: NFS and CIFS are network file systems, local mounts inside them are not")
    func mountTable() {
        // Proves the lookup the ledger refuses network folders by: the longest mount point that
        // holds the folder wins (a local disk mounted inside an NFS share is local), a mount
        // point is matched whole (`/mnt/shared` is not inside `/mnt/share`), escaped spaces are
        // read, and only network types are named.
        let cases: [(folder: String, type: String?)] = [
            ("/mnt/share", "nfs4"), ("/mnt/share/ledgers", "nfs4"), ("/mnt/share/local/ledgers", nil),
            ("/mnt/shared", nil), ("/srv/team files/ledgers", "cifs"), ("/tmp", nil), ("/home/me", nil),
        ]
        for (folder, type) in cases {
            #expect(NetworkFileSystem.type(holding: folder, mountInfo: Self.mountInfo) == type, "\(folder)")
        }
    }

    @Test("a folder on this machine's temporary disk is not taken for a network one")
    func localFolder() throws {
        // Proves the check reads this process's real mount table for the folder of the path
        // (which need not exist yet) and lets a local one pass; a network mount cannot be made
        // here, so its refusal rests on the table above.
        try withTemporaryDirectory { directory in
            #expect(NetworkFileSystem.type(holding: directory.path("not-yet.db")) == nil)
        }
    }
}
