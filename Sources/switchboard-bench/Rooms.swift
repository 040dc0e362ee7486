import ArgumentParser
import NIOCore
import Synchronization

/// Many rooms with one subscriber each (spread over the nodes), P publishers spreading their
/// messages over all rooms as fast as deliveries keep up: the messages/s a cluster carries when
/// traffic is not one hot room (what sharding a backplane can scale).
struct Rooms: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "R rooms with a subscriber each, P publishers spread over them.")
    @OptionGroup var load: LoadOptions
    @Option(help: "Rooms (one subscriber each).") var rooms = 10000
    @Option(help: "Publishers (spread over the nodes).") var publishers = 20
    @Option(help: "Messages in all.") var messages = 100_000
    @Option(help: "Messages each publisher keeps ahead of the deliveries.") var window = 32

    func run() async throws {
        let targets = try load.parsedTargets()
        let generator = load.generator()
        let rooms = self.rooms
        let subscribers = try await generator.open(
            rooms, user: { "rs-\($0)" }, target: { targets[$0 % targets.count] },
            onOpen: { index, channel in channel.sendText(generator.dialect.join("room-\(index)")) })
        guard await generator.wait(upTo: .seconds(120), { generator.totals.replies.load(ordering: .relaxed) >= rooms }) else {
            throw BenchError("only \(generator.totals.replies.load(ordering: .relaxed)) of \(rooms) joins were answered")
        }
        await settle(generator)
        let senders = try await generator.open(publishers, user: { "rp-\($0)" }, target: { targets[($0 + 1) % targets.count] })
        let payload = load.payload
        let total = messages
        let inFlight = window * publishers
        let published = Atomic(0)
        let started = nanos()
        // Each publisher walks the rooms from its own start, so traffic covers every room.
        let tasks = senders.enumerated().map { index, sender in
            sender.eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: .microseconds(200)) { task in
                var sent = false
                while published.load(ordering: .relaxed) < total,
                    published.load(ordering: .relaxed) - generator.totals.received.load(ordering: .relaxed) < inFlight
                {
                    let seq = published.add(1, ordering: .relaxed).newValue
                    let room = (seq &* 7919 &+ index) % rooms
                    sender.sendText(
                        generator.dialect.publish(room: "room-\(room)", data: benchData(seq: seq, payload: payload)), flush: false)
                    sent = true
                }
                if sent { sender.flush() }
                if published.load(ordering: .relaxed) >= total { task.cancel() }
            }
        }
        _ = await generator.wait(upTo: .seconds(600)) { published.load(ordering: .relaxed) >= total }
        for task in tasks { task.cancel() }
        await drain(generator, expected: total)
        let seen = try await generator.collect()
        let seconds = Double(seen.lastReceipt > started ? seen.lastReceipt - started : 0) / 1e9
        var result = Report(scenario: "rooms", label: load.label)
        result["rooms"] = rooms
        result["publishers"] = publishers
        result["nodes"] = targets.count
        result["payload"] = payload
        result["expected"] = total
        result["delivered"] = seen.received
        result["lost"] = total - seen.received
        result["errors"] = seen.errors
        result["seconds"] = seconds
        result["messages_per_s"] = Double(seen.received) / seconds
        result.latency(seen.latency)
        result.print()
        await generator.shutdown(subscribers + senders)
    }
}
