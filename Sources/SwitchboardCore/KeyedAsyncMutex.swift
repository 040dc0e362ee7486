import Synchronization

/// First-come-first-served locks for async code, one per key, made when first taken and dropped
/// when free. Unlike an actor, a lock stays held across suspension points, so a sequence of
/// backplane calls runs as one step; bodies under the same key run one at a time in arrival
/// order, bodies under other keys alongside.
public final class KeyedAsyncMutex: Sendable {
    /// A key is held while it has an entry; the entry lists who waits for it next.
    private let held = Mutex<[String: [CheckedContinuation<Void, Never>]]>([:])

    public init() {}

    public func withLock<T: Sendable>(_ key: String, _ body: () async throws -> T) async rethrows -> T {
        await lock(key)
        defer { unlock(key) }
        return try await body()
    }

    private func lock(_ key: String) async {
        let acquired = held.withLock { held -> Bool in
            guard held[key] == nil else { return false }
            held[key] = []
            return true
        }
        if acquired { return }
        await withCheckedContinuation { continuation in
            let handedOver = held.withLock { held -> Bool in
                guard held[key] != nil else {
                    held[key] = []
                    return true
                }
                held[key]!.append(continuation)
                return false
            }
            if handedOver { continuation.resume() }
        }
    }

    private func unlock(_ key: String) {
        let next = held.withLock { held -> CheckedContinuation<Void, Never>? in
            guard let waiters = held[key], !waiters.isEmpty else {
                held[key] = nil
                return nil
            }
            // Passed straight to the next waiter: the key stays held.
            held[key] = Array(waiters.dropFirst())
            return waiters[0]
        }
        next?.resume()
    }
}
