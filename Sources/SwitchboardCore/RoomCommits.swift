/// Each room's membership changes on their way to the backplane, as a group commit.
///
/// A room has at most one batch out at a time, so the backplane sees the room's changes in the
/// order this node made them; what is made while a batch is out waits and goes out together as
/// the next batch, one round trip for all of it. Whoever finds its room idle sends at once; when
/// a batch is answered, the first waiter is handed the turn with everyone behind it. No
/// lock is held across the round trip and no task is started for it. The router keeps this in
/// its own state, so that a change joins the queue in the same step as it is made locally.
struct RoomCommits {
    /// What a waiting change is told when the batch before it is settled.
    enum Turn: Sendable {
        /// Its batch was answered; with the room's top when the batch read it.
        case done(StreamRead?)
        /// It is first in line: it sends its entry (as it stands now) and then those of the
        /// waiters that came after it.
        case send(Entry, [Waiter])
    }

    /// A change waiting for the batch before it.
    struct Waiter {
        var entry: Entry
        var continuation: CheckedContinuation<Turn, any Error>
    }

    /// One change made here: what the backplane is told (nil when the user's presence does
    /// not change, e.g. a second connection), and the connection whose join is undone if the
    /// batch fails.
    struct Entry {
        var change: RoomChange?
        var joining: ObjectIdentifier?
        var user: String
        /// A join that wants the room's top: the batch reads it after its changes.
        var wantsTop = false
    }

    /// A room with an entry has a batch out; the array is who waits for it.
    private var busy: [String: [Waiter]] = [:]

    /// Returns true when `room` was idle: the caller sends its batch now. Otherwise the caller
    /// must `wait` with a continuation, in the same critical section.
    mutating func claim(_ room: String) -> Bool {
        guard busy[room] == nil else { return false }
        busy[room] = []
        return true
    }

    mutating func wait(_ waiter: Waiter, for room: String) {
        busy[room]!.append(waiter)
    }

    /// A batch was answered: who waited for it, in order. The first of them gets the turn and
    /// the others go in its batch; with none, the room is idle again.
    mutating func finish(_ room: String) -> [Waiter] {
        let waiting = busy[room] ?? []
        busy[room] = waiting.isEmpty ? nil : []
        return waiting
    }
}
