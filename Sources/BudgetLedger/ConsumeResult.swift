/// Optional usage details recorded with a consume, for billing.
public struct UsageDetails: Sendable, Equatable {
    public var agentID: String?
    public var model: String?
    public var provider: String?
    public var latencyMilliseconds: Int64?
    /// A JSON object, already checked; its `org_id` and `user_id` are indexed for billing.
    public var metadata: Metadata?

    /// The metadata's text as recorded, or nil (a reader's convenience: nothing is parsed).
    public var metadataJSON: String? { metadata?.json }

    public init(
        agentID: String? = nil, model: String? = nil, provider: String? = nil,
        latencyMilliseconds: Int64? = nil, metadata: Metadata? = nil
    ) {
        self.agentID = agentID
        self.model = model
        self.provider = provider
        self.latencyMilliseconds = latencyMilliseconds
        self.metadata = metadata
    }

    /// Usage details with metadata given as JSON text, which is checked here, once, as
    /// `Metadata(json:)` checks it (so a bad one throws before any ledger call, not inside it).
    ///
    /// - Throws: `LedgerError.invalidInput` naming `metadata` or `metadata.org_id` / `metadata.user_id`.
    public init(
        agentID: String? = nil, model: String? = nil, provider: String? = nil,
        latencyMilliseconds: Int64? = nil, metadataJSON: String?
    ) throws {
        self.init(
            agentID: agentID, model: model, provider: provider, latencyMilliseconds: latencyMilliseconds,
            metadata: try metadataJSON.map(Metadata.init(json:)))
    }

    public static let none = UsageDetails()
}

/// One recorded consume event.
public struct ConsumeEvent: Sendable, Equatable {
    /// The event id: strictly increasing across the ledger.
    public let id: Int64
    /// When it was recorded: UTC microseconds since 1970.
    public let timestampMicroseconds: Int64
    public let threadID: String
    public let promptTokens: Int64
    public let completionTokens: Int64
    public let idempotencyKey: String?
    public let usage: UsageDetails
    /// The cost in nano-dollars (10⁻⁹ USD); nil when the model has no price.
    public let costNanodollars: Int64?
    /// The reservation this consume settled, if any.
    public let reservationID: Int64?

    package init(
        id: Int64, timestampMicroseconds: Int64, threadID: String, promptTokens: Int64, completionTokens: Int64,
        idempotencyKey: String?, usage: UsageDetails, costNanodollars: Int64?, reservationID: Int64?
    ) {
        self.id = id
        self.timestampMicroseconds = timestampMicroseconds
        self.threadID = threadID
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.idempotencyKey = idempotencyKey
        self.usage = usage
        self.costNanodollars = costNanodollars
        self.reservationID = reservationID
    }
}

/// What a consume did.
public struct ConsumeResult: Sendable, Equatable {
    /// The thread's budget after the consume (for a replay: as it stands now, or, once the
    /// thread's life has ended, as the original consume left it).
    public let budget: ThreadBudget
    /// The thresholds this consume crossed, ascending.
    public let crossedThresholds: [ThresholdCrossing]
    /// The recorded event.
    public let event: ConsumeEvent
    /// True when an idempotency key matched an earlier consume: nothing new was recorded,
    /// and `event` and `crossedThresholds` are the original's.
    public let isReplay: Bool
    /// The scope windows' thresholds this consume crossed (migration 0010), by scope.
    public let crossedScopeThresholds: [ScopeThresholdCrossing]

    package init(
        budget: ThreadBudget, crossedThresholds: [ThresholdCrossing], event: ConsumeEvent, isReplay: Bool,
        crossedScopeThresholds: [ScopeThresholdCrossing] = []
    ) {
        self.budget = budget
        self.crossedThresholds = crossedThresholds
        self.event = event
        self.isReplay = isReplay
        self.crossedScopeThresholds = crossedScopeThresholds
    }
}
