import SwitchboardCore

/// The seam between a replay and live messages, for one connection.
///
/// While a join (or a connect, for the inbox) reads its stream's top and replay, the stream's
/// live messages are *held*. Then `release` says what the read found: the reply and the replay
/// go out first, then the held messages after the top; those at or below it were in the read
/// (or came before the join) and are dropped. A *floor* stays behind: a live message at or
/// below the top may still arrive late (a store that answers on one connection and publishes
/// on another), and is dropped too, until the stream moves past the top or changes epoch, or
/// two heartbeats pass (`age`: what was in flight when the store answered has long arrived by
/// then, and an idle connection keeps no floor). So a message reaches the connection once, in
/// offset order, whether it came by replay or live.
///
/// Touched only on the connection's event loop. Empty for almost every connection: the check
/// made for each delivery is then one comparison.
struct StreamGates {
    private enum Gate {
        case holding([EncodedFrame])
        /// `age`: heartbeats seen since it was set.
        case floor(StreamPosition, age: Int)
    }

    private var gates: [Address: Gate] = [:]

    var isEmpty: Bool { gates.isEmpty }

    /// An empty table gives its storage back: an idle connection holds none.
    private mutating func remove(_ stream: Address) {
        gates[stream] = nil
        if gates.isEmpty { gates = [:] }
    }

    /// Live messages of `stream` wait from now on.
    mutating func hold(_ stream: Address) {
        gates[stream] = .holding([])
    }

    enum Action: Equatable {
        case write
        case held
        /// A message the connection has (or, below a join's top, is not owed).
        case drop
    }

    mutating func deliver(_ frame: EncodedFrame) -> Action {
        guard let stream = frame.stream, let gate = gates[stream] else { return .write }
        switch gate {
        case .holding(var held):
            gates[stream] = nil  // no copy of the array while it grows
            held.append(frame)
            gates[stream] = .holding(held)
            return .held
        case .floor(let top, _):
            guard let position = frame.position, position.epoch == top.epoch else {
                remove(stream)
                return .write
            }
            if position.offset <= top.offset { return .drop }
            // Past the top: nothing older can follow (a store delivers in offset order).
            remove(stream)
            return .write
        }
    }

    /// Ends the hold: returns the held messages to write after the replay. With a `top`, those
    /// at or below it are dropped and a floor is kept; without one (the read failed), all go.
    mutating func release(_ stream: Address, top: StreamPosition?) -> [EncodedFrame] {
        guard case .holding(let held) = gates[stream] else { return [] }
        remove(stream)
        guard let top else { return held }
        let newer = held.filter { frame in
            guard let position = frame.position, position.epoch == top.epoch else { return true }
            return position.offset > top.offset
        }
        // Once a newer message goes out, nothing older can follow, and at top 0 nothing is
        // older: no floor is needed.
        if newer.isEmpty && top.offset > 0 { gates[stream] = .floor(top, age: 0) }
        return newer
    }

    /// A heartbeat passed: floors set two heartbeats ago are dropped.
    mutating func age() {
        for (stream, gate) in gates {
            guard case .floor(let top, let age) = gate else { continue }
            if age >= 1 { remove(stream) } else { gates[stream] = .floor(top, age: age + 1) }
        }
    }

    /// The connection left the stream.
    mutating func forget(_ stream: Address) {
        remove(stream)
    }
}
