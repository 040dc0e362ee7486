/// Work that outlives the call that starts it (diallers, a new shard's connection, a retired
/// one's stop), run as child tasks of one long-lived `run`, so that structured concurrency still
/// owns it: cancelling `run` cancels every job. The mesh and the Redis Cluster client and
/// subscriber each keep one.
public struct BackgroundJobs: Sendable {
    private let jobs: AsyncStream<@Sendable () async -> Void>
    private let queue: AsyncStream<@Sendable () async -> Void>.Continuation

    public init() {
        (jobs, queue) = AsyncStream.makeStream(of: (@Sendable () async -> Void).self)
    }

    /// Hands `job` to `run`.
    public func spawn(_ job: @escaping @Sendable () async -> Void) {
        queue.yield(job)
    }

    /// No more jobs: `run` returns once it is cancelled or the queue is drained.
    public func finish() {
        queue.finish()
    }

    /// Runs every job handed over, each as a child task, beside `alongside` (if any), until
    /// cancelled or finished; then cancels what still runs.
    public func run(alongside: (@Sendable () async -> Void)? = nil) async {
        await withDiscardingTaskGroup { group in
            if let alongside { group.addTask { await alongside() } }
            for await job in jobs {
                group.addTask { await job() }
            }
            group.cancelAll()
        }
    }
}
