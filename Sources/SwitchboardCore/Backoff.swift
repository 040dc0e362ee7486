/// Capped exponential backoff with jitter, for every reconnecting loop (broker clients, hub and
/// mesh links): attempt n waits a random time between half and all of
/// min(maximum, minimum × 2ⁿ), so that many nodes do not reconnect in step.
public struct Backoff: Sendable, Equatable {
    public var minimum: Duration
    public var maximum: Duration

    public init(minimum: Duration, maximum: Duration) {
        self.minimum = minimum
        self.maximum = maximum
    }

    /// The ceiling of attempt `attempt` (0-based), before jitter.
    public func ceiling(attempt: Int) -> Duration {
        min(maximum, minimum * (1 << min(max(attempt, 0), 20)))
    }

    public func delay(attempt: Int) -> Duration {
        var generator = SystemRandomNumberGenerator()
        return delay(attempt: attempt, using: &generator)
    }

    public func delay(attempt: Int, using generator: inout some RandomNumberGenerator) -> Duration {
        ceiling(attempt: attempt) * Double.random(in: 0.5...1.0, using: &generator)
    }
}
