import AsyncHTTPClient
import BudgetLedgerPostgres
import Foundation
import NIOHTTP1
import PostgresNIO
import Synchronization
import Testing

@Suite("budget-ledger serve --db postgres://…")
struct PostgresServeTests {
    @Test("the core routes, exports and re-pricing included, answer on PostgreSQL as on SQLite")
    func coreRoutesServeOnPostgres() async throws {
        // Proves the seam end to end: a spawned server on a PostgreSQL database answers health,
        // config, the thread routes (idempotent replays included), holds, prices, usage, the
        // feed, exports, re-pricing and metrics with the SQLite server's shapes; bad input is a 400
        // naming the field with nothing written.
        let databaseURL = try await PostgresTestCluster.freshDatabase()
        let server = try ServeProcess(databaseURL: databaseURL)
        defer { server.stop() }
        let base = server.baseURL

        #expect(try await call(.GET, base, "/healthz").json["status"] as? String == "ok")
        #expect(number(try await call(.PUT, base, "/api/v1/config", json: #"{"defaultMaxTokens": 5000}"#).json["defaultMaxTokens"]) == 5000)
        #expect(number(try await call(.GET, base, "/api/v1/config").json["defaultMaxTokens"]) == 5000)
        #expect(number(try await call(.PUT, base, "/api/v1/threads/t1/limit", json: #"{"maxTokens": 100}"#).json["maxTokens"]) == 100)

        let consume = #"{"promptTokens": 60, "completionTokens": 20, "agentId": "planner", "model": "gpt-x", "idempotencyKey": "k1"}"#
        let first = try await call(.POST, base, "/api/v1/threads/t1/check-and-consume", json: consume)
        #expect(first.status == 200, "\(first)")
        #expect(number((first.json["budget"] as? [String: Any])?["totalTokens"]) == 80)
        #expect(first.json["replayed"] as? Bool == false)
        let retry = try await call(.POST, base, "/api/v1/threads/t1/check-and-consume", json: consume)
        #expect(retry.json["replayed"] as? Bool == true)
        let conflict = try await call(
            .POST, base, "/api/v1/threads/t1/consume", json: #"{"promptTokens": 61, "idempotencyKey": "k1"}"#)
        #expect(conflict.status == 409)
        let exhausted = try await call(.POST, base, "/api/v1/threads/t1/check-and-consume", json: #"{"promptTokens": 21}"#)
        #expect(exhausted.status == 409)
        #expect(exhausted.json["error"] as? String == "budget exhausted")
        #expect(try await call(.POST, base, "/api/v1/threads/t1/check", json: #"{"estimatedTokens": 20}"#).status == 200)
        #expect(try await call(.POST, base, "/api/v1/threads/t1/check", json: #"{"estimatedTokens": 21}"#).status == 409)

        // Bad input: the field and the rule, nothing written.
        let bad = try await call(.POST, base, "/api/v1/threads/t1/consume", json: #"{"promptTokens": -5}"#)
        #expect(bad.status == 400)
        #expect(bad.body.contains("promptTokens"))
        #expect(number(try await call(.GET, base, "/api/v1/usage/threads/t1").json["totalTokens"]) == 80)
        #expect(try await call(.GET, base, "/api/v1/usage/threads/nobody").status == 404)

        // Holds: reserve (and its replay), settle, release.
        let reserveBody = #"{"tokens": 10, "ttlSeconds": 60, "idempotencyKey": "r1"}"#
        let reserved = try await call(.POST, base, "/api/v1/threads/t1/reserve", json: reserveBody)
        #expect(reserved.status == 200, "\(reserved)")
        let reservationID = try #require(number(reserved.json["reservationId"]) as Int64?)
        let replayedHold = try await call(.POST, base, "/api/v1/threads/t1/reserve", json: reserveBody)
        #expect(number(replayedHold.json["reservationId"]) == reservationID)
        #expect(replayedHold.json["replayed"] as? Bool == true)
        let settled = try await call(
            .POST, base, "/api/v1/reservations/\(reservationID)/settle", json: #"{"promptTokens": 5}"#)
        #expect(settled.status == 200, "\(settled)")
        let second = try await call(.POST, base, "/api/v1/threads/t1/reserve", json: #"{"tokens": 5}"#)
        let secondID = try #require(number(second.json["reservationId"]) as Int64?)
        let holds = try await call(.GET, base, "/api/v1/reservations?threadId=t1")
        #expect(number(holds.json["count"]) == 1, "\(holds)")
        #expect(number(holds.json["heldTokens"]) == 5)
        #expect(try await call(.POST, base, "/api/v1/reservations/\(secondID)/release").status == 200)
        #expect(try await call(.POST, base, "/api/v1/reservations/\(secondID)/release").status == 409)
        #expect(try await call(.POST, base, "/api/v1/reservations/999999/release").status == 404)

        // Prices and usage.
        let price = try await call(
            .PUT, base, "/api/v1/prices/gpt-y", json: #"{"promptPerMillion": "2.5", "completionPerMillion": "10"}"#)
        #expect(price.status == 200, "\(price)")
        // The reference table the schema starts with, plus gpt-y, in byte order as on SQLite; with its ETag.
        let table = try await call(.GET, base, "/api/v1/prices")
        let models = (table.json["prices"] as? [[String: Any]] ?? []).compactMap { $0["model"] as? String }
        #expect(models.contains("gpt-y") && models.contains("gpt-4o"), "\(table)")
        #expect(models == models.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }))
        let tag = try #require(table.eTag)
        #expect(try await call(.GET, base, "/api/v1/prices", headers: [("If-None-Match", tag)]).status == 304)
        #expect(try await call(.GET, base, "/api/v1/prices/GPT-Y").status == 200)
        #expect(try await call(.GET, base, "/api/v1/prices/unknown-model").status == 404)
        // A future price is replaced (PUT with replaces) and withdrawn (DELETE ?from=); one in
        // force cannot be (409), and a second withdrawal finds nothing (404), as on SQLite.
        let future = "2099-01-01T00:00:00Z"
        #expect(try await call(
            .PUT, base, "/api/v1/prices/gpt-y", json: #"{"promptPerMillion": "3", "completionPerMillion": "9", "effectiveFrom": "\#(future)"}"#
        ).status == 200)
        let replaced = try await call(
            .PUT, base, "/api/v1/prices/gpt-y", json: #"{"promptPerMillion": "4", "completionPerMillion": "8", "replaces": "\#(future)"}"#)
        #expect(replaced.status == 200 && replaced.body.contains("4"), "\(replaced)")
        let withdrawn = try await call(.DELETE, base, "/api/v1/prices/gpt-y?from=\(future)")
        #expect(withdrawn.status == 200 && withdrawn.json["withdrawn"] != nil, "\(withdrawn)")
        #expect(try await call(.DELETE, base, "/api/v1/prices/gpt-y?from=\(future)").status == 404)
        #expect(try await call(.DELETE, base, "/api/v1/prices/gpt-y?from=1970-01-01T00:00:00Z").status == 404)
        let inForce = try #require(
            (try await call(.GET, base, "/api/v1/prices/gpt-y").json["price"] as? [String: Any])?["effectiveFrom"] as? String)
        #expect(try await call(.DELETE, base, "/api/v1/prices/gpt-y?from=\(inForce)").status == 409)
        let overview = try await call(.GET, base, "/api/v1/usage")
        let totals = (overview.json["usage"] as? [String: Any])?["totals"] as? [String: Any]
        #expect(number(totals?["totalTokens"]) == 85, "\(overview)")
        #expect(number(try await call(.GET, base, "/api/v1/usage/agents/planner").json["totalTokens"]) == 80)
        #expect(number(try await call(.GET, base, "/api/v1/usage/models/GPT-X").json["totalTokens"]) == 80)
        let threads = try await call(.GET, base, "/api/v1/usage/threads")
        #expect(number(threads.json["count"]) == 1)
        #expect(number(threads.json["defaultMaxTokens"]) == 5000)
        let metrics = try await call(.GET, base, "/metrics")
        #expect(metrics.status == 200)
        #expect(metrics.body.contains("budget_ledger_threads_open 1"))
        #expect(!metrics.body.contains("budget_ledger_ledger_file"))

        // Reset and cleanup.
        #expect(number(try await call(.POST, base, "/api/v1/threads/t1/reset").json["totalTokens"]) == 0)
        #expect(try await call(.DELETE, base, "/api/v1/threads/t1").status == 200)
        #expect(try await call(.DELETE, base, "/api/v1/threads/t1").status == 404)
        #expect(try await call(.POST, base, "/api/v1/usage/reset").status == 200)

        // The feed: every event once, in id order, paged by lastId; a bad page is a 400 naming the field.
        var feed: [Int64] = []
        var after: Int64 = 0
        while true {
            let page = try await call(.GET, base, "/api/v1/events?after=\(after)&limit=3")
            #expect(page.status == 200, "\(page)")
            let ids = (page.json["events"] as? [[String: Any]] ?? []).compactMap { number($0["id"]) as Int64? }
            if ids.isEmpty { break }
            feed += ids
            after = try #require(number(page.json["lastId"]) as Int64?)
            #expect(after == ids.last)
        }
        #expect(feed.count > 10 && feed == feed.sorted() && Set(feed).count == feed.count, "\(feed)")
        let badPage = try await call(.GET, base, "/api/v1/events?limit=0")
        #expect(badPage.status == 400 && badPage.body.contains("limit"), "\(badPage)")

        // Exports: the events and every rollup, in every format, filtered or not, are served,
        // each body byte for byte the CLI's `export` output on the same database; a bad query is
        // a 400 naming the parameter, with nothing internal in it.
        let filters: [(query: String, options: [String])] = [
            ("", []), ("&org=acme", ["--org", "acme"]), ("&from=2000-01-01&to=2100-01-01", ["--from", "2000-01-01", "--to", "2100-01-01"]),
        ]
        for format in ["csv", "ndjson", "json"] {
            for grouping in [nil, "org", "agent", "model", "thread", "day"] as [String?] {
                for (query, options) in grouping == nil ? filters : [filters[0]] {
                    let path = "/api/v1/usage/export?format=\(format)" + (grouping.map { "&groupBy=\($0)" } ?? "") + query
                    let served = try await call(.GET, base, path)
                    #expect(served.status == 200, "\(path): \(served)")
                    let cli = try runCLI(
                        ["export", "--format", format, "--db", databaseURL] + (grouping.map { ["--group-by", $0] } ?? []) + options)
                    #expect(cli.status == 0, "\(cli.stderr)")
                    #expect(served.body == cli.stdout, "\(path)")
                }
            }
        }
        let exported = try await call(.GET, base, "/api/v1/usage/export?format=csv")
        #expect(exported.body.split(whereSeparator: \.isNewline).count == 3 && exported.body.contains("gpt-x"), "\(exported.body)")
        let byModel = try await call(.GET, base, "/api/v1/usage/export?format=ndjson&groupBy=model")
        #expect(byModel.body.contains(#""model":"gpt-x""#), "\(byModel)")
        for (path, field) in [
            ("/api/v1/usage/export?from=yesterday", "from"), ("/api/v1/usage/export?org=a%09b", "org"),
            ("/api/v1/usage/export?groupBy=week", "groupBy"), ("/api/v1/usage/export?format=xml", "format"),
            ("/api/v1/usage/export?groupBy=day&to=soon", "to"),
        ] {
            let refused = try await call(.GET, base, path)
            #expect(refused.status == 400 && refused.body.contains(field), "\(path): \(refused)")
            #expect(!refused.body.contains("postgres://") && !refused.body.contains("SELECT"))
        }

        // Re-pricing (migration 0008): usage recorded unpriced is billed once, exactly, as on SQLite
        // (ConfigAndPricesEndpointTests); a body without `to` is a 400 naming it, nothing written.
        let unpriced = #"{"promptTokens": 1000, "completionTokens": 100, "model": "acme-serve"}"#
        for _ in 0..<2 { #expect(try await call(.POST, base, "/api/v1/threads/r/consume", json: unpriced).status == 200) }
        let acmePrice = #"{"promptPerMillion": "2", "completionPerMillion": "4", "effectiveFrom": "2020-01-01"}"#
        #expect(try await call(.PUT, base, "/api/v1/prices/acme-serve", json: acmePrice).status == 200)
        let noEnd = try await call(.POST, base, "/api/v1/prices/reprice", json: #"{"model": "acme-serve", "from": "2020-01-01"}"#)
        #expect(noEnd.status == 400 && noEnd.body.contains("to") && noEnd.body.contains("is required"), "\(noEnd)")
        let range = #"{"model": "acme-serve", "from": "2020-01-01", "to": "2100-01-01"}"#
        let repriced = try await call(.POST, base, "/api/v1/prices/reprice", json: range)
        // 2 × (1,000 × 2,000 + 100 × 4,000) nano-dollars.
        #expect(repriced.body == #"{"repriced":2,"cost":0.0048,"costNanos":4800000,"unpriced":0,"complete":true}"#, "\(repriced)")
        let again = try await call(.POST, base, "/api/v1/prices/reprice", json: range)
        #expect(again.body == #"{"repriced":0,"cost":0,"costNanos":0,"unpriced":0,"complete":true}"#, "\(again)")
        let acmeUsage = try await call(.GET, base, "/api/v1/usage/models/acme-serve")
        #expect(acmeUsage.body.contains(#""totalCost":0.0048,"unpricedRequests":0,"unpricedTokens":0"#), "\(acmeUsage)")

        #expect(server.stop() == 0)
    }

    @Test("the scope budget routes serve on PostgreSQL: set, list, show, remove, and checked calls refused by a scope")
    func budgetRoutesServeOnPostgres() async throws {
        // Proves GET/PUT/DELETE /api/v1/budgets… reach the PostgreSQL store through the seam (no
        // more 501): the answers and errors of the SQLite server (400 naming the field with
        // nothing written, 404 for a scope without a budget, 409 removing it twice), a checked
        // consume and a hold refused by the org's budget (409 naming the scope), the list
        // byte for byte the CLI's `budget list --json` on the same database.
        let databaseURL = try await PostgresTestCluster.freshDatabase()
        let server = try ServeProcess(databaseURL: databaseURL)
        defer { server.stop() }
        let base = server.baseURL
        let set = try await call(.PUT, base, "/api/v1/budgets/org%3Aacme", json: #"{"period": "day", "maxTokens": 100, "maxUsd": "1.50"}"#)
        #expect(set.status == 200, "\(set)")
        #expect(set.json["scope"] as? String == "org:acme" && set.body.contains(#""maxUsd":1.5,"#), "\(set)")
        let badPeriod = try await call(.PUT, base, "/api/v1/budgets/global", json: #"{"period": "year", "maxTokens": 1}"#)
        #expect(badPeriod.status == 400 && badPeriod.body.contains("period"), "\(badPeriod)")
        let noMax = try await call(.PUT, base, "/api/v1/budgets/global", json: #"{"period": "day"}"#)
        #expect(noMax.status == 400 && noMax.body.contains("maxTokens"), "\(noMax)")
        #expect(try await call(.GET, base, "/api/v1/budgets/global").status == 404)

        // With a model: the org's dollar budget refuses a call whose cost is unknown.
        let call80 = #"{"promptTokens": 80, "model": "gpt-4o", "metadata": {"org_id": "acme"}}"#
        let unpriced = try await call(.POST, base, "/api/v1/threads/t1/check-and-consume", json: #"{"promptTokens": 1, "metadata": {"org_id": "acme"}}"#)
        #expect(unpriced.status == 409 && unpriced.body.contains("dollar budget"), "\(unpriced)")
        #expect(try await call(.POST, base, "/api/v1/threads/t1/check-and-consume", json: call80).status == 200)
        let refused = try await call(.POST, base, "/api/v1/threads/t2/check-and-consume", json: call80)
        #expect(refused.status == 409 && refused.body.contains("org:acme"), "\(refused)")
        let hold = try await call(
            .POST, base, "/api/v1/threads/t2/reserve", json: #"{"tokens": 30, "model": "gpt-4o", "metadata": {"org_id": "acme"}}"#)
        #expect(hold.status == 409 && hold.body.contains("org:acme"), "\(hold)")
        let one = try await call(.GET, base, "/api/v1/budgets/org%3Aacme")
        #expect(number(one.json["spentTokens"]) == 80, "\(one)")
        let list = try await call(.GET, base, "/api/v1/budgets")
        #expect(number(list.json["count"]) == 1, "\(list)")
        let cli = try runCLI(["budget", "list", "--json", "--db", databaseURL])
        #expect(cli.status == 0 && list.body + "\n" == cli.stdout, "\(list.body) \(cli.stdout)")

        let removed = try await call(.DELETE, base, "/api/v1/budgets/org%3Aacme")
        #expect(removed.status == 200 && removed.json["removed"] as? Bool == true, "\(removed)")
        #expect(try await call(.DELETE, base, "/api/v1/budgets/org%3Aacme").status == 409)
        #expect(try await call(.POST, base, "/api/v1/threads/t2/check-and-consume", json: call80).status == 200)
        #expect(number(try await call(.GET, base, "/api/v1/budgets").json["count"]) == 0)
        #expect(server.stop() == 0)
    }

    @Test("4 serve processes on one database: 320 checked consumes of 10 under a max of 1,000 succeed exactly 100 times")
    func fourServersAreExact() async throws {
        // Proves exactness across servers over real HTTP (the issue's acceptance): 16 clients
        // spread 320 check-and-consumes over 4 spawned servers; exactly 100 answer 200, the other
        // 220 answer 409 budget exhausted, and the thread's used tokens, as every server and the
        // events table read them, are exactly 1,000. A 503 is retried under its idempotency key.
        let databaseURL = try await PostgresTestCluster.freshDatabase()
        let servers = try (0..<4).map { _ in try ServeProcess(databaseURL: databaseURL) }
        defer { servers.forEach { $0.stop() } }
        let limit = try await call(.PUT, servers[0].baseURL, "/api/v1/threads/shared/limit", json: #"{"maxTokens": 1000}"#)
        #expect(limit.status == 200)
        let counted = try await withThrowingTaskGroup(of: [Int].self) { group in
            for client in 0..<16 {
                group.addTask {
                    var statuses: [Int] = []
                    for call in 0..<20 {
                        let server = servers[(client + call) % servers.count]
                        // A 503 (no database connection in time, on a loaded machine) is retried
                        // under the same key, as a client should: it records at most once.
                        var answer = try await PostgresServeTests.checkAndConsume(
                            server.baseURL, thread: "shared", key: "c\(client)-\(call)")
                        for _ in 0..<20 where answer.status == 503 {
                            answer = try await PostgresServeTests.checkAndConsume(
                                server.baseURL, thread: "shared", key: "c\(client)-\(call)")
                        }
                        statuses.append(answer.status)
                    }
                    return statuses
                }
            }
            var counted: [Int: Int] = [:]
            for try await statuses in group {
                for status in statuses { counted[status, default: 0] += 1 }
            }
            return counted
        }
        #expect(counted[200] == 100, "\(counted)")
        #expect(counted[409] == 220, "\(counted)")
        for server in servers {
            #expect(number(try await call(.GET, server.baseURL, "/api/v1/usage/threads/shared").json["totalTokens"]) == 1000)
        }
        let spent = try await PostgresTestCluster.withAdminClient(try await PostgresTestCluster.shared(), database: String(databaseURL.split(separator: "/").last!)) { client in
            var spent: Int64 = -1
            let rows = try await client.query(
                "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint FROM events WHERE kind = 'consume' AND thread_id = 'shared'")
            for try await value in rows.decode(Int64.self) { spent = value }
            return spent
        }
        #expect(spent == 1000)
        for server in servers { #expect(server.stop() == 0) }
    }

    @Test("a server killed with SIGKILL and PostgreSQL stopped at once mid-traffic: no acknowledged consume lost, none twice, verify passes")
    func serverKilledMidTraffic() async throws {
        // Proves the issue's durability test with servers, in one run: 16 clients send 480
        // check-and-consumes of 10 tokens (a 1,000 max) through 3 servers on a cluster of the
        // test's own. In the middle of the traffic one server is killed with SIGKILL and a new
        // one started in its place, and later PostgreSQL itself is stopped with
        // `pg_ctl stop -m immediate` (a crash: no checkpoint) and started again under the
        // running servers. A client whose call died (its server, the database) or got a 503
        // retries it on another server under the same idempotency key, as a client should.
        // Then: every consume acknowledged with a 200 is in the events table exactly once, no key
        // is recorded twice, exactly 100 calls were acknowledged, the thread's total is exactly
        // its max (nothing acknowledged was lost, no retry overshot), and `verify` finds the
        // derived state equal to its recomputation from the events.
        let cluster = try PostgresTestCluster.PrivateCluster.create()
        defer { cluster.remove() }
        let databaseURL = cluster.server.url(database: "postgres")
        let first = try (0..<3).map { _ in try ServeProcess(databaseURL: databaseURL) }
        let traffic = CrashTraffic(servers: first)
        defer { traffic.servers.withLock { $0 }.forEach { $0.stop() } }
        #expect(try await call(.PUT, first[1].baseURL, "/api/v1/threads/crash/limit", json: #"{"maxTokens": 1000}"#).status == 200)
        let acknowledged = try await withThrowingTaskGroup(of: [String].self) { group in
            for client in 0..<16 {
                group.addTask {
                    var keys: [String] = []
                    for call in 0..<30 {
                        let key = "k\(client)-\(call)"
                        var attempt = 0
                        while true {
                            let base = traffic.servers.withLock { $0[(client + call + attempt) % $0.count].baseURL }
                            attempt += 1
                            // A short deadline: the HTTP client keeps retrying to connect to a dead
                            // server until then; a live server's answer that comes later is
                            // retried under its key, which records nothing twice either.
                            let answer = try? await PostgresServeTests.checkAndConsume(
                                base, thread: "crash", key: key, tokens: 10, timeout: .seconds(10))
                            guard let answer, answer.status != 503 else {
                                #expect(attempt < 100, "\(key) found no server")
                                if attempt >= 100 { break }
                                try await Task.sleep(for: .milliseconds(50))
                                continue
                            }
                            #expect(answer.status == 200 || answer.status == 409, "\(answer)")
                            if answer.status == 200 { keys.append(key) }
                            traffic.answered.add(1, ordering: .relaxed)
                            break
                        }
                    }
                    return keys
                }
            }
            group.addTask {
                // The crashes, once traffic is flowing (by count, not by time: the machine may be
                // busy): a server killed and replaced, then the database stopped at once and started.
                while traffic.answered.load(ordering: .relaxed) < 60 { try await Task.sleep(for: .milliseconds(5)) }
                let victim = traffic.servers.withLock { $0[0] }
                victim.kill9()
                let replacement = try ServeProcess(databaseURL: databaseURL)
                traffic.servers.withLock { $0[0] = replacement }
                while traffic.answered.load(ordering: .relaxed) < 90 { try await Task.sleep(for: .milliseconds(5)) }
                try cluster.stopImmediately()
                try await Task.sleep(for: .milliseconds(300))
                try cluster.startServer()
                return []
            }
            var keys: [String] = []
            for try await clientKeys in group { keys += clientKeys }
            return keys
        }
        #expect(acknowledged.count == 100, "\(acknowledged.count) acknowledged")
        #expect(Set(acknowledged).count == acknowledged.count)
        let recorded = try await PostgresTestCluster.withAdminClient(cluster.server) { client in
            var recorded: [String: Int64] = [:]
            let rows = try await client.query(
                "SELECT idempotency_key, count(*)::bigint FROM events WHERE kind = 'consume' AND thread_id = 'crash' GROUP BY 1")
            for try await (key, count) in rows.decode((String, Int64).self) { recorded[key] = count }
            return recorded
        }
        #expect(recorded.values.allSatisfy { $0 == 1 }, "a key recorded twice")
        #expect(Set(recorded.keys) == Set(acknowledged), "recorded and acknowledged differ")
        let base = traffic.servers.withLock { $0[0].baseURL }
        #expect(number(try await call(.GET, base, "/api/v1/usage/threads/crash").json["totalTokens"]) == 1000)
        let ledger = try await PostgresLedger(url: databaseURL)
        let report = try await ledger.verify()
        await ledger.close()
        #expect(report.isConsistent, "\(report.problems)")
    }

    @Test("PostgreSQL restarted under a running server: 503 with Retry-After while it is down, then served again")
    func serverRecoversAfterDatabaseRestart() async throws {
        // Proves the pool recovers and the outage is a clear, bounded answer: with one server
        // running throughout, the cluster is stopped twice, cleanly (`pg_ctl stop -m fast`) and
        // as a crash (`-m immediate`); while it is down, calls get 503 with Retry-After and a
        // JSON error that shows nothing internal (never a 500 or a hang); after `pg_ctl start`
        // on the same port, a call succeeds again within a bounded number of retries, and the
        // ledger holds exactly the acknowledged consumes (the refused ones wrote nothing).
        let cluster = try PostgresTestCluster.PrivateCluster.create()
        defer { cluster.remove() }
        let server = try ServeProcess(databaseURL: cluster.server.url(database: "postgres"))
        defer { server.stop() }
        let base = server.baseURL
        #expect(try await call(.PUT, base, "/api/v1/threads/r/limit", json: #"{"maxTokens": 1000}"#).status == 200)
        #expect(try await Self.checkAndConsume(base, thread: "r", key: "before").status == 200)
        var acknowledged: Int64 = 10

        for (round, stop) in [("fast", cluster.stopFast), ("immediate", cluster.stopImmediately)].enumerated() {
            try stop.1()
            for attempt in 0..<2 {
                let down = try await Self.checkAndConsume(base, thread: "r", key: "down-\(round)-\(attempt)")
                #expect(down.status == 503, "\(stop.0): \(down)")
                #expect(down.retryAfter != nil)
                #expect(down.json["error"] as? String == "unavailable")
                #expect(!down.body.contains("postgres://") && !down.body.contains("127.0.0.1"))
            }
            #expect(try await call(.GET, base, "/healthz").status == 503)

            try cluster.startServer()
            var recovered: HTTPAnswer?
            for _ in 0..<120 {
                let answer = try await Self.checkAndConsume(base, thread: "r", key: "after-\(round)")
                if answer.status == 200 {
                    recovered = answer
                    break
                }
                #expect(answer.status == 503, "\(stop.0): \(answer)")
                try await Task.sleep(for: .milliseconds(250))
            }
            let after = try #require(recovered, "no call succeeded after the \(stop.0) restart")
            acknowledged += 10
            #expect(number((after.json["budget"] as? [String: Any])?["totalTokens"]) == acknowledged)
            #expect(try await call(.GET, base, "/healthz").status == 200)
        }
        #expect(server.stop() == 0)
    }

    /// One check-and-consume of 10 tokens on `thread` under idempotency key `key`.
    static func checkAndConsume(
        _ base: String, thread: String, key: String, tokens: Int = 10, timeout: TimeAmount = .seconds(120)
    ) async throws -> HTTPAnswer {
        try await call(
            .POST, base, "/api/v1/threads/\(thread)/check-and-consume",
            json: #"{"promptTokens": \#(tokens - 4), "completionTokens": 4, "idempotencyKey": "\#(key)"}"#,
            timeout: timeout)
    }
}

/// The servers a crash test's clients call (one is replaced mid-test) and how many calls were answered.
private final class CrashTraffic: Sendable {
    let servers: Mutex<[ServeProcess]>
    let answered = Atomic<Int>(0)

    init(servers: [ServeProcess]) { self.servers = Mutex(servers) }
}
