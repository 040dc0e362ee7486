import RESP

/// Orders what the subscriptions deliver around a backfill. Messages are handed on as they
/// arrive (on the subscriber connection's event loop) while the gate is open; once the
/// subscriptions were lost and are back (`.resubscribing`), what was missed is read from the
/// history first, and messages arriving meanwhile are held, then handed on in their order.
struct DeliveryGate {
    private enum State {
        case open
        /// A backfill is running; `again`: the subscriptions were lost once more meanwhile.
        case filling(held: [RedisMessage], again: Bool)
    }

    enum Step {
        /// Hand these on, then ask again.
        case deliver([RedisMessage])
        /// Fill in from the history once more, then ask again.
        case backfill
        /// Nothing held: the gate is open again.
        case done
    }

    private var state = State.open

    /// Whether to hand `message` on now (false: it is held for the backfill's end).
    mutating func arrived(_ message: RedisMessage) -> Bool {
        guard case .filling(var held, let again) = state else { return true }
        state = .open  // lets go of the array, so that the append does not copy it
        held.append(message)
        state = .filling(held: held, again: again)
        return false
    }

    /// The subscriptions are being restored; whether the caller must start a backfill (false:
    /// one is running, and will run again).
    mutating func resubscribing() -> Bool {
        guard case .filling(let held, _) = state else {
            state = .filling(held: [], again: false)
            return true
        }
        state = .filling(held: held, again: true)
        return false
    }

    /// What the backfill's runner does next, after a backfill or after handing messages on.
    mutating func next() -> Step {
        guard case .filling(let held, let again) = state else { return .done }
        if !held.isEmpty {
            state = .filling(held: [], again: again)
            return .deliver(held)
        }
        if again {
            state = .filling(held: [], again: false)
            return .backfill
        }
        state = .open
        return .done
    }
}
