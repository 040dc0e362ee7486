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

    /// `length` random characters of a-z0-9, from one 64-bit draw per 11 of them (one system
    /// call each, not one per character). Up to 15 characters stay inline in the `String`.
    static func random(_ length: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        var bits: UInt64 = 0
        var left = 0
        // Written in place: no array on the way (one is made per connection).
        return String(unsafeUninitializedCapacity: length) { characters in
            for index in 0..<length {
                if left == 0 {
                    bits = generator.next()
                    left = 11  // 2^64 is ~138 times 36^11: a draw gives 11 characters, biased under 1 %
                }
                characters[index] = alphabet[Int(bits % 36)]
                bits /= 36
                left -= 1
            }
            return length
        }
    }

    private static let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789".utf8)
}
