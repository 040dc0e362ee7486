import ArgumentParser
import NIOCore

/// N clients connect and join at once, all one room or each its own: how long until every join
/// is answered, and how many presence events that caused. In one room each join is announced to
/// every member already there, so the events grow with the square of N.
struct JoinStorm: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "joinstorm", abstract: "N clients join one room at once (or N rooms, with --spread).")
    @OptionGroup var load: LoadOptions
    @Option(help: "Clients, spread over the targets.") var clients = 2000
    @Flag(help: "Each client its own room (the comparison).") var spread = false
    @Option(help: "Seconds to wait for every join's answer.") var timeout = 300

    func run() async throws {
        let targets = try load.parsedTargets()
        let generator = load.generator(threads: 2, sources: 2)
        let (clients, spread) = (self.clients, self.spread)
        let started = ContinuousClock.now
        let channels = try await generator.open(
            clients, user: { "joiner-\($0)" }, target: { targets[$0 % targets.count] },
            onOpen: { index, channel in channel.sendText(generator.dialect.join(spread ? "joinstorm-\(index)" : "joinstorm")) })
        let answered = await generator.wait(upTo: .seconds(timeout)) {
            generator.totals.replies.load(ordering: .relaxed) >= clients
        }
        let joined = ContinuousClock.now - started
        await settle(generator)
        let settled = ContinuousClock.now - started
        var report = Report(scenario: "joinstorm", label: load.label)
        report["clients"] = clients
        report["rooms"] = spread ? clients : 1
        report["joins_answered"] = generator.totals.replies.load(ordering: .relaxed)
        report["all_joined_s"] = answered ? joined.seconds : nil
        report["presence_settled_s"] = settled.seconds
        report["presence_events"] = generator.totals.presence.load(ordering: .relaxed)
        report.print()
        await generator.shutdown(channels)
    }

}
