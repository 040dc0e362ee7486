import Foundation
import SwitchboardCore
import SwitchboardTesting
import Testing

/// The demo and admin pages in a real headless Chromium, driven by `Tests/Browser/pages.py`
/// (selenium with Debian's chromium-driver). The cluster is started here; each scenario checks
/// the pages and exits 0, or says what failed. Run alone after the other suites by
/// `scripts/test`: a browser loads both cores while it starts.
@Suite(.serialized)
struct BrowserTests {
    @Test func twoPagesOnTwoNodesChatAndSeeEachOther() async throws {
        try await withCluster(nodes: 2) { cluster in
            try await runPages("chat", "--nodes", "\(cluster.http(0, "")),\(cluster.http(1, ""))")
        }
    }

    @Test func aKilledConnectionRecoversEveryMessageOnceInOrder() async throws {
        try await withCluster(nodes: 2) { cluster in
            try await runPages("recovery", "--nodes", "\(cluster.http(0, "")),\(cluster.http(1, ""))")
        }
    }

    @Test func markupInAMessageShowsAsText() async throws {
        try await withCluster(nodes: 1) { cluster in
            try await runPages("escape", "--nodes", cluster.http(0, ""))
        }
    }

    /// switchboard.js alone: every command, the inbox resumed, a room it cannot recover reported.
    @Test func theJavaScriptClientResumesAndSaysWhatItCouldNot() async throws {
        try await withCluster(nodes: 2, history: HistoryPolicy(size: 3, ttlSeconds: 300)) { cluster in
            try await runPages("client", "--nodes", "\(cluster.http(0, "")),\(cluster.http(1, ""))")
        }
    }

    /// Three `switchboard serve` processes on a real Redis, with an API key: the admin page
    /// refuses a wrong key, lists every node, and shows the one killed -9 as down.
    @Test func theAdminPageFollowsTheClusterBehindItsKey() async throws {
        let key = "admin-test-key-\(UInt32.random(in: 0...UInt32.max))"
        try await withRedis { redis in
            var nodes: [NodeProcess] = []
            defer { for node in nodes { node.killNow() } }
            for index in 1...3 {
                nodes.append(
                    try await NodeProcess.start(
                        "n\(index)",
                        [
                            "serve", "--node-id", "n\(index)", "--redis", redis.url, "--heartbeat", "2", "--api-key", key, "--log-level",
                            "warning",
                        ]))
            }
            for node in nodes { try await node.waitUntilReady() }
            let victim = try #require(nodes[2].pid)
            try await runPages(
                "admin", "--nodes", nodes.map { $0.http("") }.joined(separator: ","), "--kill-pid", "\(victim)", "--api-key", key)
            try await nodes[2].kill9()
        }
    }
}

/// Runs one scenario of `Tests/Browser/pages.py`; fails the test with its output unless it passes.
func runPages(_ arguments: String..., timeout: Duration = .seconds(180)) async throws {
    try await runPython("Browser/pages.py", arguments, timeout: timeout)
}

/// Runs a Python script under `Tests/` with `arguments`; fails the test with its output unless it
/// exits 0.
func runPython(_ path: String, _ arguments: [String], timeout: Duration = .seconds(180)) async throws {
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent(path)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", script.path] + arguments
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    try process.run()
    // Read while it runs, so that a full pipe never blocks the script.
    let reading = Task.detached { output.fileHandleForReading.readDataToEndOfFile() }
    do {
        try await eventually("\(path) to finish", timeout: timeout) { !process.isRunning }
    } catch {
        process.terminate()
        throw error
    }
    let text = String(decoding: await reading.value, as: UTF8.self)
    #expect(process.terminationStatus == 0, "\(path) \(arguments.joined(separator: " ")):\n\(text)")
}
