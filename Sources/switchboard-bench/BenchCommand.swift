import ArgumentParser

/// `switchboard-bench`: the load generator (fanout, unicast, idle, churn) and the ceiling server.
@main
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchboard-bench",
        abstract: "Load generator for Switchboard and its peers; each scenario prints one JSON line and a summary.",
        subcommands: [
            Fanout.self, Unicast.self, Rooms.self, BackplaneRooms.self, Idle.self, Churn.self, Storm.self, JoinStorm.self, Ceiling.self,
        ])
}
