import Foundation
import Testing

@Suite("CLI: import records an NDJSON export as consumes, once")
struct CLIImportTests {
    /// A source ledger with several agents, models and orgs, exported as NDJSON into `export.ndjson`
    /// in its folder; returns the source and the export's path.
    static func exportedSource() throws -> (ledger: ScratchLedger, exportPath: String) {
        let source = try ScratchLedger()
        let agents = ["planner", "coder", "critic"]
        let models = ["gpt-4o", "claude-sonnet-4", "mystery-model"]
        for index in 0..<9 {
            var arguments = [
                "consume", "thread-\(index % 4)", "--prompt", String(100 * (index + 1)), "--completion", String(index),
                "--agent", agents[index % 3], "--model", models[(index / 3) % 3], "--latency-ms", String(10 + index),
            ]
            if index % 2 == 0 { arguments += ["--meta", "org_id=org-\(index % 3)", "--meta", "note=n\(index)"] }
            let result = try source.run(arguments)
            try #require(result.status == 0, "\(result)")
        }
        let exportPath = source.directory.appendingPathComponent("export.ndjson").path
        try source.succeed("export", "--format", "ndjson", "--out", exportPath)
        return (source, exportPath)
    }

    /// What must read the same in both ledgers: the all-time overview and the rollups by agent, model, day and org.
    static func billingOutputs(_ ledger: ScratchLedger) throws -> [String] {
        var outputs = [try ledger.succeed("usage", "--all-time", "--json").stdout]
        for grouping in ["agent", "model", "day", "org", "thread"] {
            outputs.append(try ledger.succeed("export", "--group-by", grouping, "--format", "json").stdout)
        }
        return outputs
    }

    @Test("export then import into a fresh ledger: the same usage and rollups, verify passes, and a rerun skips all")
    func roundTrip() throws {
        let (source, exportPath) = try Self.exportedSource()
        defer { source.remove() }
        let target = try ScratchLedger()
        defer { target.remove() }
        let first = try target.succeed("import", exportPath, "--json").jsonObject()
        #expect(first["imported"] as? Int64 == 9 && first["skipped"] as? Int64 == 0 && first["batches"] as? Int64 == 1)
        #expect(try Self.billingOutputs(target) == Self.billingOutputs(source))
        let verify = try target.run("verify", "--json")
        #expect(verify.status == 0, "\(verify)")
        let again = try target.succeed("import", exportPath)
        #expect(again.stdout == "imported 0 consumes, skipped 9 already recorded, in 1 batch\n", "\(again)")
        #expect(try Self.billingOutputs(target) == Self.billingOutputs(source))
    }

    @Test("an import of a prefix (a killed run), then of the whole file, records each line once")
    func resumeAfterPartialImport() throws {
        let (source, exportPath) = try Self.exportedSource()
        defer { source.remove() }
        let target = try ScratchLedger()
        defer { target.remove() }
        let lines = try String(contentsOfFile: exportPath, encoding: .utf8).split(separator: "\n")
        let prefixPath = target.directory.appendingPathComponent("prefix.ndjson").path
        try (lines.prefix(4).joined(separator: "\n") + "\n").write(toFile: prefixPath, atomically: true, encoding: .utf8)
        let partial = try target.succeed("import", prefixPath, "--batch-size", "3", "--json").jsonObject()
        #expect(partial["imported"] as? Int64 == 4 && partial["batches"] as? Int64 == 2, "\(partial)")
        let whole = try target.succeed("import", exportPath, "--batch-size", "3", "--json").jsonObject()
        #expect(whole["imported"] as? Int64 == 5 && whole["skipped"] as? Int64 == 4 && whole["batches"] as? Int64 == 3)
        #expect(try Self.billingOutputs(target) == Self.billingOutputs(source))
        #expect(try target.run("verify").status == 0)
    }

    @Test("a bad line exits 64 naming line and field; its batch writes nothing, earlier batches stay")
    func badLineIsRefused() throws {
        let good = { (id: Int) in
            #"{"id":\#(id),"timestamp":"2026-12-01T10:00:00Z","threadId":"t","promptTokens":5,"completionTokens":1}"#
        }
        let cases: [(line: String, names: String)] = [
            ("{\"id\":3,", "invalid line 3: is not valid JSON"),
            (good(3).replacingOccurrences(of: #""promptTokens":5"#, with: #""promptTokens":-5"#), "invalid promptTokens on line 3"),
            (good(3).replacingOccurrences(of: #""threadId":"t""#, with: #""threadId":"\#(String(repeating: "x", count: 257))""#),
             "invalid threadId on line 3"),
        ]
        for (bad, names) in cases {
            let target = try ScratchLedger()
            defer { target.remove() }
            let path = target.directory.appendingPathComponent("bad.ndjson").path
            try [good(1), good(2), bad, good(4)].joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
            let result = try target.run("import", path, "--batch-size", "2")
            #expect(result.status == 64, "\(result)")
            #expect(result.firstErrorLine.hasPrefix("Error: \(names)"), "\(result)")
            #expect(result.firstErrorLine.contains("nothing of lines 3…3"), "\(result)")
            #expect(result.firstErrorLine.contains("kept: 1 earlier batch (2 imported, 0 skipped)"), "\(result)")
            let usage = try target.succeed("usage", "t", "--json").jsonObject()
            #expect(usage["requestCount"] as? Int64 == 2, "\(usage)")
        }
    }

    @Test("a line over 64 KiB exits 64 naming the line, and is never buffered whole")
    func overlongLineIsRefused() throws {
        let target = try ScratchLedger()
        defer { target.remove() }
        let path = target.directory.appendingPathComponent("long.ndjson").path
        let good = #"{"id":1,"timestamp":"2026-12-01T10:00:00Z","threadId":"t","promptTokens":5,"completionTokens":1}"#
        try (good + "\n" + String(repeating: " ", count: 70_000) + "{}\n").write(toFile: path, atomically: true, encoding: .utf8)
        let result = try target.run("import", path)
        #expect(result.status == 64, "\(result)")
        #expect(result.firstErrorLine.hasPrefix("Error: invalid line 2: is longer than the limit of 65536 bytes"), "\(result)")
        #expect(!FileManager.default.fileExists(atPath: target.databasePath), "the first batch was refused before any ledger was opened")
    }

    @Test("input bad within its first batch creates no ledger file; a later bad batch keeps the earlier ones")
    func firstBatchIsCheckedBeforeTheLedgerIsOpened() throws {
        // Proves the order: the first batch is read and checked before the ledger is opened, so a
        // wrong file (not an export at all) leaves no empty ledger behind, with the same error.
        let target = try ScratchLedger()
        defer { target.remove() }
        let path = target.directory.appendingPathComponent("not-an-export.ndjson").path
        try "id,timestamp,threadId\n1,2026-12-01,t\n".write(toFile: path, atomically: true, encoding: .utf8)
        let result = try target.run("import", path)
        #expect(result.status == 64, "\(result)")
        #expect(result.firstErrorLine.hasPrefix("Error: invalid line 1: is not valid JSON"), "\(result)")
        #expect(result.firstErrorLine.contains("nothing of lines 1…1"), "\(result)")
        #expect(!FileManager.default.fileExists(atPath: target.databasePath))
    }

    @Test("an empty file imports nothing and succeeds")
    func emptyFile() throws {
        let target = try ScratchLedger()
        defer { target.remove() }
        let path = target.directory.appendingPathComponent("empty.ndjson").path
        try "".write(toFile: path, atomically: true, encoding: .utf8)
        let result = try target.succeed("import", path)
        #expect(result.stdout == "imported 0 consumes, skipped 0 already recorded, in 0 batches\n", "\(result)")
        #expect(try target.snapshot().eventCount == 0)
    }

    @Test("- reads the export from standard input")
    func standardInput() throws {
        let (source, exportPath) = try Self.exportedSource()
        defer { source.remove() }
        let target = try ScratchLedger()
        defer { target.remove() }
        let binary = try CLIBinary.require()
        let process = try RunningProcess(
            executable: "/bin/sh",
            arguments: ["-c", #""$0" import --db "$1" --json - < "$2""#, binary, target.databasePath, exportPath],
            environment: childEnvironment([:]), directory: target.directory)
        let result = process.wait()
        #expect(result.status == 0, "\(result)")
        #expect(try result.jsonObject()["imported"] as? Int64 == 9, "\(result)")
        #expect(try Self.billingOutputs(target) == Self.billingOutputs(source))
    }
}
