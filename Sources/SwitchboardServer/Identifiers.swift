import Synchronization

/// Makes session ids and message ids. A message id is the node's random prefix plus a counter:
/// unique across the cluster and across restarts, and cheap to make.
final class Identifiers: Sendable {
    private let prefix: String
    private let counter = Atomic<UInt64>(0)

    init() {
        prefix = Self.random(10) + "-"
    }

    func messageID() -> String {
        let value = counter.wrappingAdd(1, ordering: .relaxed).newValue
        return prefix + String(value, radix: 36)
    }

    static func random(_ length: Int) -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")
        return String((0..<length).map { _ in alphabet.randomElement()! })
    }
}
