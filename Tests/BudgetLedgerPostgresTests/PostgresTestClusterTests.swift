import Foundation
import Testing

/// The test cluster's own plumbing.
@Suite("The PostgreSQL test cluster")
struct PostgresTestClusterTests {
    @Test("what the cluster runs (pg_ctl, and the server it starts) gets none of the test process's descriptors above 2")
    func spawnedProgramsInheritNoDescriptors() throws {
        // Proves the fix of a CI hang: a server started while another test had a pipe open kept
        // the pipe's write end, so that test's reader never saw its end. A pipe open here must
        // not be among the descriptors of a program the cluster's spawner runs.
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        defer {
            close(ends[0])
            close(ends[1])
        }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("cluster-fds-\(getpid())-\(UUID())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let log = folder.appendingPathComponent("fds.txt").path
        try PostgresTestCluster.run("/bin/ls", ["/proc/self/fd"], asRoot: false, log: log)
        let descriptors = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").compactMap { Int32($0) }
        // 0–2, and the one ls opens to list the folder.
        #expect(descriptors.filter { $0 > 2 }.count <= 1, "\(descriptors)")
        #expect(!descriptors.contains(ends[0]) && !descriptors.contains(ends[1]), "\(descriptors) hold the pipe \(ends)")
    }
}
