import ArgumentParser
import Foundation
import Histogram
import NIOCore
import Synchronization

struct LoadOptions: ParsableArguments {
    @Option(help: "Nodes to load, comma-separated ws:// URLs.") var targets: String = "ws://127.0.0.1:8081/ws,ws://127.0.0.1:8082/ws"
    @Option(help: "Bytes of each message's data.") var payload = 64
    @Option(help: "Event loop threads of the load generator.") var threads = 1
    @Option(help: "Source addresses 127.0.0.1..N for the connections (28k ports each).") var sources = 1
    @Flag(help: "Connect with ?batch=1 (several messages per frame).") var batch = false
    @Option(help: "Name of the server under test, for the report.") var label = "switchboard"
    @Option(help: "Protocol of the server under test: \(Dialect.allCases.map(\.rawValue).joined(separator: ", ")).")
    var dialect: Dialect = .switchboard

    func generator(threads: Int? = nil, sources: Int? = nil) -> LoadGenerator {
        LoadGenerator(threads: threads ?? self.threads, sourceAddresses: sources ?? self.sources, batch: batch, dialect: dialect)
    }

    func parsedTargets() throws -> [Target] {
        try targets.split(separator: ",").map { try Target(String($0)) }
    }
}

/// S subscribers in one room, spread evenly over the targets; one publisher on the first.
struct Fanout: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "One room, S subscribers over the nodes, one publisher.")
    @OptionGroup var load: LoadOptions
    @Option(help: "Subscribers.") var subscribers = 1000
    @Option(help: "Messages/s to publish; 0 publishes as fast as deliveries keep up.") var rate = 0
    @Option(help: "Unthrottled: messages to publish.") var messages = 2000
    @Option(help: "Unthrottled: messages published ahead of their deliveries.") var window = 8
    @Option(help: "Paced: seconds to publish for.") var duration = 10

    func run() async throws {
        let targets = try load.parsedTargets()
        let generator = load.generator()
        let subscribers = self.subscribers
        let channels = try await generator.open(
            subscribers, user: { "sub-\($0)" }, target: { targets[$0 % targets.count] },
            onOpen: { _, channel in channel.sendText(generator.dialect.join("bench")) })
        guard await generator.wait(upTo: .seconds(30), { generator.totals.replies.load(ordering: .relaxed) >= subscribers }) else {
            throw BenchError("only \(generator.totals.replies.load(ordering: .relaxed)) of \(subscribers) joins were answered")
        }
        // Each join is announced to the members already there (S²/2 `joined` in all): measure
        // once the server has delivered them, not while it is still busy with them.
        await settle(generator)
        let publisher = try await generator.open(1, user: { _ in "publisher" }, target: { _ in targets[0] })[0]
        let payload = load.payload
        let published = Atomic(0)
        let started = nanos()
        let total = rate > 0 ? rate * duration : messages
        let window = self.window
        let rate = self.rate
        let task: RepeatedTask
        if rate > 0 {
            task = publisher.eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: .nanoseconds(Int64(1_000_000_000 / rate))) { task in
                let seq = published.add(1, ordering: .relaxed).newValue
                publisher.sendText(generator.dialect.publish(room: "bench", data: benchData(seq: seq, payload: payload)))
                if seq >= total { task.cancel() }
            }
        } else {
            // Keep `window` messages ahead of their deliveries: as fast as the server delivers.
            task = publisher.eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: .microseconds(200)) { task in
                var sent = false
                while published.load(ordering: .relaxed) < total,
                    published.load(ordering: .relaxed) * subscribers - generator.totals.received.load(ordering: .relaxed) < window
                        * subscribers
                {
                    let seq = published.add(1, ordering: .relaxed).newValue
                    publisher.sendText(generator.dialect.publish(room: "bench", data: benchData(seq: seq, payload: payload)), flush: false)
                    sent = true
                }
                if sent { publisher.flush() }
                if published.load(ordering: .relaxed) >= total { task.cancel() }
            }
        }
        _ = await generator.wait(upTo: .seconds(Int64(rate > 0 ? duration + 30 : 600))) { published.load(ordering: .relaxed) >= total }
        task.cancel()
        let expected = total * subscribers
        await drain(generator, expected: expected)
        let seen = try await generator.collect()
        // Nothing received at all: report the loss, not a crash.
        let seconds = Double(seen.lastReceipt > started ? seen.lastReceipt - started : 0) / 1e9
        var result = Report(scenario: rate > 0 ? "fanout-paced" : "fanout", label: load.label)
        result["subscribers"] = subscribers
        result["nodes"] = targets.count
        result["messages"] = total
        result["rate"] = rate
        result["payload"] = payload
        result["batch"] = load.batch
        result["expected"] = expected
        result["delivered"] = seen.received
        result["lost"] = expected - seen.received
        result["errors"] = seen.errors
        result["seconds"] = seconds
        result["deliveries_per_s"] = Double(seen.received) / seconds
        result.latency(seen.latency)
        result.print()
        await generator.shutdown(channels + [publisher])
    }
}

/// P sender/receiver pairs on different nodes, a fixed total rate of direct messages.
struct Unicast: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "P pairs, sender on one node and receiver on another, fixed total rate.")
    @OptionGroup var load: LoadOptions
    @Option(help: "Sender/receiver pairs.") var pairs = 100
    @Option(help: "Messages/s in all.") var rate = 1000
    @Option(help: "Seconds to send for.") var duration = 10

    func run() async throws {
        let targets = try load.parsedTargets()
        guard targets.count >= 2 else { throw BenchError("unicast needs two targets") }
        let generator = load.generator()
        let receivers = try await generator.open(pairs, user: { "recv-\($0)" }, target: { _ in targets[1] })
        let senders = try await generator.open(pairs, user: { "send-\($0)" }, target: { _ in targets[0] })
        // Welcome comes once the user is online cluster-wide: sending earlier is answered `offline`.
        let everyone = 2 * pairs
        _ = await generator.wait(upTo: .seconds(30)) { generator.totals.welcomed.load(ordering: .relaxed) >= everyone }
        let payload = load.payload
        let total = rate * duration
        let pairs = self.pairs
        let sent = Atomic(0)
        let started = nanos()
        let task = senders[0].eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: .nanoseconds(Int64(1_000_000_000 / rate))) {
            task in
            let seq = sent.add(1, ordering: .relaxed).newValue
            senders[seq % pairs].sendText(generator.dialect.send(to: "recv-\(seq % pairs)", data: benchData(seq: seq, payload: payload)))
            if seq >= total { task.cancel() }
        }
        _ = await generator.wait(upTo: .seconds(Int64(duration + 30))) { sent.load(ordering: .relaxed) >= total }
        task.cancel()
        await drain(generator, expected: total)
        let seen = try await generator.collect()
        var result = Report(scenario: "unicast", label: load.label)
        result["pairs"] = pairs
        result["rate"] = rate
        result["payload"] = payload
        result["expected"] = total
        result["delivered"] = seen.received
        result["lost"] = total - seen.received
        result["errors"] = seen.errors
        result["seconds"] = Double(seen.lastReceipt - started) / 1e9
        result.latency(seen.latency)
        result.print()
        await generator.shutdown(receivers + senders)
    }
}

/// Waits until presence events stop arriving (none for half a second), for at most 2 minutes.
func settle(_ generator: LoadGenerator) async {
    var last = -1
    let deadline = ContinuousClock.now + .seconds(120)
    while ContinuousClock.now < deadline {
        let seen = generator.totals.presence.load(ordering: .relaxed)
        if seen == last { return }
        last = seen
        try? await Task.sleep(for: .milliseconds(500))
    }
}

/// Waits for the deliveries still on their way; gives up after 5 s without progress.
func drain(_ generator: LoadGenerator, expected: Int) async {
    var last = -1
    var quietSince = ContinuousClock.now
    while generator.totals.received.load(ordering: .relaxed) < expected {
        let now = generator.totals.received.load(ordering: .relaxed)
        if now != last {
            last = now
            quietSince = .now
        } else if ContinuousClock.now - quietSince > .seconds(5) {
            return
        }
        try? await Task.sleep(for: .milliseconds(10))
    }
}

/// One result: a JSON line (for scripts) and a human summary.
struct Report {
    private var fields: [String: Any] = [:]
    private let scenario: String

    init(scenario: String, label: String) {
        self.scenario = scenario
        fields["scenario"] = scenario
        fields["server"] = label
    }

    subscript(key: String) -> Any? {
        get { fields[key] }
        set { fields[key] = newValue }
    }

    mutating func latency(_ histogram: Histogram<UInt64>) {
        guard histogram.totalCount > 0 else { return }
        for (name, percentile) in [("p50_ms", 50.0), ("p99_ms", 99.0), ("p999_ms", 99.9)] {
            fields[name] = Double(histogram.valueAtPercentile(percentile)) / 1e6
        }
        fields["max_ms"] = Double(histogram.max) / 1e6
    }

    func print() {
        // JSON has no NaN or infinity (a rate over zero seconds): those print as null.
        let rounded = fields.mapValues { value -> Any in
            if let double = value as? Double { return double.isFinite ? (double * 1000).rounded() / 1000 : NSNull() }
            return value
        }
        let data = try! JSONSerialization.data(withJSONObject: rounded, options: [.sortedKeys])
        Swift.print(String(decoding: data, as: UTF8.self))
        let summary = rounded.keys.sorted().filter { $0 != "scenario" && $0 != "server" }.map { "\($0)=\(rounded[$0]!)" }
        Swift.print("# \(scenario) on \(fields["server"]!): " + summary.joined(separator: " "))
        fflush(nil)
    }
}

extension Duration {
    /// In seconds, as the reports print them.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
