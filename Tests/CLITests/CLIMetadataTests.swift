import BudgetLedger
import Foundation
import Testing

/// `--meta` and `--meta-json` are parsed once by the CLI into a checked `Metadata`.
@Suite("CLI metadata: parsed once, refused in the ledger's words before the ledger is opened")
struct CLIMetadataTests {
    /// Command lines whose metadata is refused, and the first line of stderr, word for word.
    static let refusals: [(arguments: [String], error: String)] = [
        (["consume", "t", "--prompt", "1", "--meta-json", #"{"user_id":7}"#], "Error: invalid --meta user_id: must be a string"),
        (["consume", "t", "--prompt", "1", "--meta", "org_id="], "Error: invalid --meta org_id: must not be empty"),
        (["reserve", "t", "--tokens", "1", "--meta", "org_id="], "Error: invalid --meta org_id: must not be empty"),
        (["settle", "1", "--prompt", "1", "--meta-json", #"{"org_id":{}}"#], "Error: invalid --meta org_id: must be a string"),
        (["consume", "t", "--prompt", "1", "--meta-json", #"{"note":""# + String(repeating: "x", count: 16_374) + #""}"#],
         "Error: invalid --meta: is 16385 bytes; the limit is 16384 bytes"),
        (["consume", "t", "--prompt", "1", "--meta-json", "[1]"], "Error: --meta-json must be a JSON object, got: [1]"),
        (["consume", "t", "--prompt", "1", "--meta", "novalue"], "Error: --meta takes KEY=VALUE, got: novalue"),
    ]

    @Test func badMetadataExits64BeforeTheLedgerIsOpened() throws {
        // Proves: each refusal exits 64 with the ledger's message under the flag's name, and is
        // made before the ledger is opened (no ledger file is created); with --json, a ledger
        // rule's refusal is also on stdout as {"error": …}, as every ledger refusal is.
        for (arguments, error) in Self.refusals {
            let ledger = try ScratchLedger()
            defer { ledger.remove() }
            let result = try ledger.run(arguments)
            #expect(result.status == 64, "\(result)")
            #expect(result.firstErrorLine == error, "\(result)")
            #expect(!FileManager.default.fileExists(atPath: ledger.databasePath), "\(result)")
            guard error.hasPrefix("Error: invalid") else { continue }
            let json = try ledger.run(arguments + ["--json"])
            #expect(json.status == 64, "\(json)")
            #expect(try json.jsonObject()["error"] as? String == String(error.dropFirst("Error: ".count)), "\(json)")
        }
    }

    @Test func metaEntriesMergeOverMetaJSONIntoCompactSortedText() throws {
        // Proves: --meta entries are merged over --meta-json's object, and the ledger records the
        // merged object as compact text with sorted keys, filed under its org and user.
        let ledger = try ScratchLedger()
        defer { ledger.remove() }
        try ledger.succeed(
            "consume", "t", "--prompt", "1", "--meta-json", #"{ "z": [1, 2.5, true, null], "org_id": "old", "a": "x/y" }"#,
            "--meta", "org_id=acme", "--meta", "user_id=ann")
        let opened = try Ledger(path: ledger.databasePath)
        defer { opened.close() }
        let event = try #require(try opened.events(after: 0).events.last { $0.kind == "consume" })
        #expect(event.usage.metadataJSON == #"{"a":"x/y","org_id":"acme","user_id":"ann","z":[1,2.5,true,null]}"#)
        #expect(event.organizationID == "acme")
        #expect(event.userID == "ann")
    }
}
