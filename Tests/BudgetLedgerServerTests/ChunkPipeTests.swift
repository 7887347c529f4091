import NIOCore
import Testing

@testable import BudgetLedgerServer

@Suite("ChunkPipe with an asynchronous producer")
struct ChunkPipeTests {
    @Test("a producer that outruns a pipe of one slot waits for the consumer and loses nothing, in order")
    func asynchronousProducerWaitsForSpace() async throws {
        // Proves `send(async:)` suspends while the pipe is full and wakes when the consumer takes
        // a chunk: with one slot, 200 chunks can only get through by waiting, and all arrive in order.
        let pipe = ChunkPipe(capacity: 1)
        let producer = Task {
            for index in 0..<200 { try await pipe.send(async: ByteBuffer(string: "\(index),")) }
            pipe.finish(.success(()))
        }
        var received = ""
        while let chunk = try await pipe.next() { received += String(buffer: chunk) }
        try await producer.value
        #expect(received == (0..<200).map { "\($0)," }.joined())
    }

    @Test("a producer waiting on a full pipe throws ConsumerGone when the consumer cancels")
    func cancelStopsAWaitingProducer() async throws {
        // Proves a client that goes away stops a PostgreSQL export waiting for space (its
        // connection is freed), instead of leaving it suspended for ever.
        let pipe = ChunkPipe(capacity: 1)
        try await pipe.send(async: ByteBuffer(string: "first"))
        let producer = Task { try await pipe.send(async: ByteBuffer(string: "second")) }
        pipe.cancel()
        await #expect(throws: ChunkPipe.ConsumerGone.self) { try await producer.value }
    }

    @Test("a producer waiting on a consumer that never reads again throws ConsumerGone after the stall limit")
    func stalledConsumerStopsAProducer() async throws {
        // Proves the stall limit applies to an asynchronous producer too (here 0 s, so the
        // timer fires whether it runs before or after the producer starts waiting).
        let pipe = ChunkPipe(capacity: 1, stallLimitSeconds: 0)
        try await pipe.send(async: ByteBuffer(string: "first"))
        await #expect(throws: ChunkPipe.ConsumerGone.self) { try await pipe.send(async: ByteBuffer(string: "second")) }
    }

    @Test("a pipe dropped with chunks unread after the client went away is freed without a crash")
    func droppedWithUnreadChunks() throws {
        // Proves a client that disconnects while chunks wait does not take the server down:
        // libdispatch traps on freeing a semaphore below its initial value, so the pipe gives
        // its slots back first (before, this test crashed the test process).
        var pipe: ChunkPipe? = ChunkPipe(capacity: 3)
        try pipe?.send(ByteBuffer(string: "one"))
        try pipe?.send(ByteBuffer(string: "two"))
        pipe?.cancel()
        #expect(throws: ChunkPipe.ConsumerGone.self) { try pipe?.send(ByteBuffer(string: "three")) }
        pipe = nil
    }
}
