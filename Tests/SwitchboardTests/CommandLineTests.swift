import Foundation
import NIOPosix
import SwitchboardClient
import SwitchboardProtocol
import SwitchboardTesting
import Synchronization
import Testing

/// The `switchboard` executable as an operator runs it.
@Suite("switchboard command")
struct CommandLineTests {
    static var executable: URL { switchboardExecutable }

    @Test func clusterServesThreeNodesAndDrainsOnSIGTERM() async throws {
        // A port taken in the meantime (tests run in parallel) makes the process exit: then
        // other ports are tried.
        final class Printed: Sendable {
            let text = Mutex("")
            func withLock<T>(_ body: (inout String) -> T) -> T { text.withLock { body(&$0) } }
        }
        var started: (process: Process, printed: Printed, basePort: Int)?
        for _ in 1...3 where started == nil {
            let basePort = try await freePorts(3)
            let process = Process()
            process.executableURL = Self.executable
            process.arguments = ["cluster", "--nodes", "3", "--base-port", "\(basePort)", "--log-level", "warning"]
            let output = Pipe()
            process.standardOutput = output
            process.standardError = FileHandle.nullDevice
            let printed = Printed()
            output.fileHandleForReading.readabilityHandler = { handle in
                let text = String(decoding: handle.availableData, as: UTF8.self)
                printed.withLock { $0 += text }
            }
            try process.run()
            try await eventually("three listening lines, or an exit", timeout: .seconds(30)) {
                printed.withLock { $0.components(separatedBy: "listening on").count - 1 } == 3 || !process.isRunning
            }
            if process.isRunning { started = (process, printed, basePort) }
        }
        guard let (process, printed, basePort) = started else { throw TimedOut(what: "a cluster on free ports") }
        defer { if process.isRunning { process.interrupt() } }

        for index in 1...3 {
            #expect(printed.withLock { $0 }.contains("listening on http://127.0.0.1:\(basePort + index - 1) (node n\(index))"))
        }
        try await eventually("readyz on every node") {
            for index in 0..<3 where try await http("GET", "http://127.0.0.1:\(basePort + index)/readyz").status != 200 {
                return false
            }
            return true
        }

        let bob = try await TestClient(SwitchboardClient.connect(to: "ws://127.0.0.1:\(basePort + 2)/ws?user=bob"))
        let alice = try await TestClient(SwitchboardClient.connect(to: "ws://127.0.0.1:\(basePort)/ws?user=alice"))
        #expect(bob.client.welcome.node == "n3")
        try await bob.client.join("lobby")
        try await alice.client.publish("lobby", data: #""hello from n1""#)
        #expect(try await bob.message().data == .string("hello from n1"))

        process.terminate()  // SIGTERM
        #expect(await bob.client.closeCode() == 1001)
        try await eventually("the process to exit") { !process.isRunning }
        #expect(process.terminationReason == .exit)
        #expect(process.terminationStatus == 0)
    }

    /// `--presence-events-limit 2`: a room's subscribers on the node get `joined`/`left` while
    /// the node holds at most 2 of them; beyond, the events are withheld (and counted), and
    /// `presence` still lists everyone.
    @Test func presenceEventsStopAboveTheLimit() async throws {
        let node = try await NodeProcess.start("limited", ["serve", "--node-id", "limited", "--presence-events-limit", "2"])
        defer { node.killNow() }
        try await node.waitUntilReady()
        let ann = try await node.connect(user: "ann")
        let bob = try await node.connect(user: "bob")
        let cal = try await node.connect(user: "cal")
        _ = try await ann.client.join("r")
        _ = try await bob.client.join("r")
        // Two subscribers here: ann hears bob.
        try await ann.next("bob's joined") { $0.type == "joined" && $0.user == "bob" }
        _ = try await cal.client.join("r")
        // Three: cal's joined is withheld from all three, and counted once.
        try await eventually("the withheld event counted") { try await node.metric("switchboard_presence_events_withheld_total") == 1 }
        #expect(try await ann.client.presence("r") == ["ann", "bob", "cal"])
        #expect(await !ann.received().contains { $0.type == "joined" && $0.user == "cal" })
        // Back to two: cal's left is delivered again.
        _ = try await cal.client.leave("r")
        try await ann.next("cal's left") { $0.type == "left" && $0.user == "cal" }
        // A limit below 0 is refused with a message that names the option.
        await #expect {
            _ = try await NodeProcess.start("negative", ["serve", "--node-id", "negative", "--presence-events-limit", "-1"], port: 1)
        } throws: { error in
            (error as? NodeProcess.ExitedEarly)?.output.contains("--presence-events-limit") ?? false
        }
    }

    @Test func anOpenNodeWarnsOnceAndASecuredOneDoesNot() async throws {
        let open = try await NodeProcess.start("open", ["serve", "--node-id", "open", "--log-level", "warning"])
        defer { open.killNow() }
        try await open.waitUntilReady()
        #expect(open.printed.components(separatedBy: "running open").count - 1 == 1)
        let secured = try await NodeProcess.start(
            "secured",
            ["serve", "--node-id", "secured", "--api-key", "k", "--jwt-secret", AuthenticationTests.secret, "--log-level", "warning"])
        defer { secured.killNow() }
        try await secured.waitUntilReady()
        #expect(!secured.printed.contains("running open"))
    }

    @Test func aMeshWithoutTheClusterSecretIsAClearError() async throws {
        let process = Process()
        process.executableURL = Self.executable
        process.arguments = ["serve", "--peers", "127.0.0.1:1"]
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        try await eventually("the process to exit") { !process.isRunning }
        #expect(process.terminationStatus != 0)
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(text.contains("--peers needs --cluster-secret"))
    }
}

extension CommandLineTests {
    /// Every option reads `SWITCHBOARD_<NAME>`; the command line wins over it.
    @Test func optionsComeFromTheEnvironmentAndTheCommandLineWins() async throws {
        // From the environment only: the library's check sees both values.
        let (status, errors) = try await runToExit(
            ["serve", "--port", "0", "--max-frame", "2000"], environment: ["SWITCHBOARD_MAX_BUFFERED": "1000"])
        #expect(status != 0 && errors.contains("--max-buffered must be at least --max-frame"), "\(errors)")
        // Given both ways, the command line's 300 is used, not the environment's 100.
        let (_, overridden) = try await runToExit(
            ["serve", "--port", "0", "--max-frame", "300", "--max-buffered", "200"], environment: ["SWITCHBOARD_MAX_FRAME": "100"])
        #expect(overridden.contains("--max-buffered must be at least --max-frame"), "\(overridden)")
        // A bad value from the environment names its variable.
        let (badStatus, bad) = try await runToExit(["hub", "--cluster-secret", "s"], environment: ["SWITCHBOARD_PORT": "abc"])
        #expect(badStatus != 0 && bad.contains("'abc' is invalid for '--port") && bad.contains("SWITCHBOARD_PORT"), "\(bad)")
        // A variable for an option the command does not have is not passed to it.
        let (clusterStatus, cluster) = try await runToExit(
            ["cluster", "--nodes", "0"], environment: ["SWITCHBOARD_REDIS": "redis://127.0.0.1:1"])
        #expect(clusterStatus != 0 && cluster.contains("--nodes must be between 1 and 64"), "\(cluster)")
        // The history options too, on every command that has them.
        for command in [["serve", "--port", "0"], ["cluster", "--nodes", "1"], ["hub", "--cluster-secret", "s"]] {
            let (historyStatus, history) = try await runToExit(command, environment: ["SWITCHBOARD_HISTORY_SIZE": "-1"])
            #expect(historyStatus != 0 && history.contains("--history-size must be 0 to 100000"), "\(command): \(history)")
        }
    }

    /// `SWITCHBOARD_HISTORY_SIZE=0` turns history off, as `--history-size 0` does.
    @Test func historyCanBeTurnedOffFromTheEnvironment() async throws {
        let node = try await NodeProcess.start("quiet", ["serve", "--node-id", "quiet"], environment: ["SWITCHBOARD_HISTORY_SIZE": "0"])
        defer { node.killNow() }
        let client = try await node.connect(user: "alice")
        #expect(client.client.welcome.inbox == nil)
        #expect(try await client.client.request(.history(room: "r")).code == "unsupported")
        let plain = try await NodeProcess.start("plain", ["serve", "--node-id", "plain"])
        defer { plain.killNow() }
        #expect(try await plain.connect(user: "alice").client.welcome.inbox?.offset == 0)
    }
}

extension CommandLineTests {
    /// A node whose port is taken exits with an error (the mesh tests start again on other
    /// ports when that happens); it once hung instead, its cluster service waiting for a bind
    /// that never came.
    @Test func aNodeWhosePortIsTakenExitsWithAnError() async throws {
        let port = try await freePorts(1)
        let holder = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: port).get()
        defer { holder.close(promise: nil) }
        for arguments in [
            ["serve", "--port", "\(port)"],
            ["serve", "--port", "\(port)", "--peers", "127.0.0.1:\(port)", "--cluster-secret", "s"],
        ] {
            let (status, errors) = try await runToExit(arguments)
            #expect(status != 0, "\(arguments): \(errors)")
        }
    }
}

extension CommandLineTests {
    /// `--config FILE`: options by their long names; the command line and the environment win.
    @Test func optionsComeFromAConfigFileUnderTheEnvironmentAndTheCommandLine() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sb-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("node.json")
        try Data(#"{"history-size": 3, "SWITCHBOARD_HISTORY_TTL": 60, "api-key": "from-the-file", "max-rooms": 7}"#.utf8).write(to: file)

        func stats(_ node: NodeProcess, key: String) async throws -> JSONValue? {
            try await http("GET", node.http("/api/admin/stats"), headers: ["Authorization": "Bearer \(key)"]).json
        }
        let fromFile = try await NodeProcess.start("f1", ["serve", "--node-id", "f1", "--config", file.path])
        defer { fromFile.killNow() }
        #expect(try await http("GET", fromFile.http("/api/admin/stats")).status == 401, "the file's api-key is used")
        #expect(try await stats(fromFile, key: "from-the-file")?["history"]?["size"]?.int == 3)
        // The command line wins over the file; the environment too; the file still fills the rest.
        let overridden = try await NodeProcess.start(
            "f2", ["serve", "--node-id", "f2", "--history-size", "5"],
            environment: ["SWITCHBOARD_CONFIG": file.path, "SWITCHBOARD_API_KEY": "from-the-environment"])
        defer { overridden.killNow() }
        let history = try await stats(overridden, key: "from-the-environment")?["history"]
        #expect(history?["size"]?.int == 5)
        #expect(history?["ttl"]?.int == 60, "an environment variable's name works in the file too")

        // A misspelt option, a file that is not an object, a missing file: clear errors.
        try Data(#"{"histroy-size": 3}"#.utf8).write(to: file)
        let (status, errors) = try await runToExit(["serve", "--port", "0", "--config", file.path])
        #expect(status != 0 && errors.contains("unknown option 'histroy-size'"), "\(errors)")
        try Data("[1, 2]".utf8).write(to: file)
        let (arrayStatus, arrayErrors) = try await runToExit(["hub", "--cluster-secret", "s", "--config", file.path])
        #expect(arrayStatus != 0 && arrayErrors.contains("must hold one JSON object"), "\(arrayErrors)")
        try Data(#"{"history-size": 3"#.utf8).write(to: file)
        let (brokenStatus, broken) = try await runToExit(["cluster", "--config", file.path])
        #expect(brokenStatus != 0 && broken.contains("is not valid JSON"), "\(broken)")
        let (missingStatus, missing) = try await runToExit(["serve", "--config", directory.appendingPathComponent("none").path])
        #expect(missingStatus != 0 && missing.contains("cannot read"), "\(missing)")
        // Values are checked as if typed: a bad one is refused by the option it names.
        try Data(#"{"history-size": -4}"#.utf8).write(to: file)
        let (badStatus, bad) = try await runToExit(["serve", "--port", "0", "--config", file.path])
        #expect(badStatus != 0 && bad.contains("--history-size must be 0 to 100000"), "\(bad)")
    }

    /// `--log-format json`: every line a JSON object with the fixed fields and the metadata.
    @Test func logsCanBeJSONLines() async throws {
        let node = try await NodeProcess.start("j1", ["serve", "--node-id", "j1", "--log-format", "json", "--log-level", "info"])
        defer { node.killNow() }
        try await eventually("the join to be logged") { node.printed.contains("joined the cluster") }
        let lines = node.printed.split(separator: "\n").filter { !$0.hasPrefix("listening on") }
        #expect(!lines.isEmpty)
        for line in lines {
            let entry = try JSONValue.parse(String(line))
            #expect(
                entry["level"]?.string != nil && entry["message"]?.string != nil && entry["ts"]?.string?.hasSuffix("Z") == true, "\(line)")
        }
        #expect(lines.contains { $0.contains(#""message":"joined the cluster""#) && $0.contains(#""node":"j1""#) }, "\(lines)")
        let (status, errors) = try await runToExit(["serve", "--port", "0", "--log-format", "xml"])
        #expect(status != 0 && errors.contains("unknown log format 'xml'"), "\(errors)")
    }
}

extension CommandLineTests {
    @Test func aBadRabbitMQAddressOrTwoBackplanesAreRefusedAtStart() async throws {
        let (status, errors) = try await runToExit(["serve", "--rabbitmq", "http://127.0.0.1:5672"])
        #expect(status != 0)
        #expect(errors.contains("--rabbitmq must be amqp://"))
        let (both, bothErrors) = try await runToExit(["serve", "--rabbitmq", "amqp://127.0.0.1", "--redis", "redis://127.0.0.1:6379"])
        #expect(both != 0)
        #expect(bothErrors.contains("choose one backplane: --redis, --rabbitmq"))
    }
}
