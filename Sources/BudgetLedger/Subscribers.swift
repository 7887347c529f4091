import Dispatch
import Synchronization

/// Identifies a subscription, for `unsubscribe`.
public struct SubscriptionID: Hashable, Sendable {
    let value: Int
}

/// One in-process subscriber: a handler and the serial queue that calls it, in commit order.
final class Subscriber: Sendable {
    let handler: @Sendable (ConsumeEvent) throws -> Void
    let queue: DispatchQueue
    /// Events queued but not yet handled; past `Ledger.subscriberBacklogMax` new ones are dropped.
    let backlog = Mutex(0)
    let dropped = Mutex<Int64>(0)

    init(id: Int, handler: @escaping @Sendable (ConsumeEvent) throws -> Void) {
        self.handler = handler
        queue = DispatchQueue(label: "budget-ledger.subscriber.\(id)")
    }

    func deliver(_ event: ConsumeEvent) {
        let accepted = backlog.withLock { count -> Bool in
            guard count < Ledger.subscriberBacklogMax else { return false }
            count += 1
            return true
        }
        guard accepted else {
            dropped.withLock { $0 += 1 }
            return
        }
        queue.async { [self] in
            // A throwing subscriber is its own problem: the event is already committed.
            try? handler(event)
            backlog.withLock { $0 -= 1 }
        }
    }
}

/// The subscribers of one ledger.
struct SubscriberList: ~Copyable {
    var nextID = 0
    var subscribers: [Int: Subscriber] = [:]
}

extension Ledger {
    /// Notifications a slow subscriber may fall behind by before new ones are dropped for it.
    /// The durable way to see every event is the feed, `events(after:limit:)`.
    public static let subscriberBacklogMax = 10_000

    /// Calls `handler` with every consume recorded through this `Ledger` instance, after its
    /// commit, never before; on a queue of its own, in commit order.
    ///
    /// A slow or throwing handler never delays, breaks or rolls back recording. Consumes made by
    /// other processes are not seen: read the feed for those.
    public func subscribe(_ handler: @escaping @Sendable (ConsumeEvent) throws -> Void) -> SubscriptionID {
        subscriberList.withLock { list in
            list.nextID += 1
            list.subscribers[list.nextID] = Subscriber(id: list.nextID, handler: handler)
            return SubscriptionID(value: list.nextID)
        }
    }

    /// Stops calls to the subscription's handler (one already queued may still run).
    public func unsubscribe(_ id: SubscriptionID) {
        _ = subscriberList.withLock { $0.subscribers.removeValue(forKey: id.value) }
    }

    /// Notifications dropped for the subscription because its handler fell too far behind.
    public func droppedNotifications(_ id: SubscriptionID) -> Int64 {
        let subscriber = subscriberList.withLock { $0.subscribers[id.value] }
        return subscriber?.dropped.withLock { $0 } ?? 0
    }

    /// Hands a committed result to every subscriber.
    func notify(_ result: ConsumeResult) {
        guard !result.isReplay else { return }
        let subscribers = subscriberList.withLock { Array($0.subscribers.values) }
        for subscriber in subscribers {
            subscriber.deliver(result.event)
        }
    }
}
